#!/usr/bin/env bash
# Build the Python environment of a GPU node: a venv with the CUDA build of torch, the pinned CPU stack
# from requirements/cpu.txt (minus faiss-cpu), the GPU extra from requirements/gpu.txt (vllm, faiss-gpu),
# the offline assets and the three packages in editable mode. Then check what was installed.
#
# usage: infra/setup_gpu_env.sh [--dry-run]
#
# Why the steps are in this order:
#   - torch first, from the CUDA wheel index, with pip's config files and find-links switched off: an
#     unpinned torch, or a machine whose pip config points at a local CPU wheel, would otherwise give the
#     CPU build;
#   - faiss-cpu and faiss-gpu install the same `faiss` module, so faiss-cpu is left out and removed;
#   - vllm==0.31.0 (the newest TRL 1.16 supports) pins torch==2.13.0, transformers>=5.10.4,<5.18.0 and
#     fastapi[standard]>=0.133,<0.137, so the whole project pins transformers==5.17.0 and fastapi==0.136.3,
#     and requirements/cpu.txt is passed as a constraint file to keep pip from moving any pin while it
#     installs vllm (`make check-gpu-deps` resolves the whole set without installing anything);
#   - vllm 0.31.0's compiled kernels (vllm._C_stable_libtorch) link the CUDA 13 runtime (libcudart.so.13):
#     torch must be the CUDA 13 build vllm was built against, which is the torch 2.13.0 wheel on PyPI
#     (it depends on cuda-toolkit 13.0.x). A cu12x torch installs but `import vllm._C_stable_libtorch`
#     fails. The node's NVIDIA driver must support CUDA 13;
#   - deepspeed builds its CUDA ops just in time (DS_BUILD_OPS=0 at install).
#
# Environment (defaults in brackets):
#   VENV_DIR         where the venv goes [.venv-gpu in the repository; lib.sh picks it up from there]
#   BASE_PYTHON      interpreter that creates the venv, 3.11+ [python3]
#   TORCH_INDEX_URL  wheel index of torch's CUDA 13 build, the one vllm 0.31.0 links against
#                    [https://pypi.org/simple, whose torch 2.13.0 Linux wheel is the CUDA 13.0 build]
#   TORCH_VERSION    [the torch pin in requirements/cpu.txt]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_std_args "$@"
((${#EXTRA_ARGS[@]} == 0)) || die "unexpected arguments: ${EXTRA_ARGS[*]}"

VENV_DIR="${VENV_DIR:-$REPO_ROOT/.venv-gpu}"
BASE_PYTHON="${BASE_PYTHON:-python3}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://pypi.org/simple}"
CPU_REQS="$REPO_ROOT/requirements/cpu.txt"
GPU_REQS="$REPO_ROOT/requirements/gpu.txt"
ASSET_REQS="$REPO_ROOT/requirements/assets.txt"
for file in "$CPU_REQS" "$GPU_REQS" "$ASSET_REQS"; do
    [[ -f "$file" ]] || die "missing $file"
done

# The exact pins of cpu.txt, one argument each, except faiss-cpu (replaced by faiss-gpu from gpu.txt).
cpu_pins=()
while IFS= read -r line; do
    line="${line%%#*}"
    line="${line//[[:space:]]/}"
    [[ -z "$line" || "$line" == faiss-cpu* ]] && continue
    cpu_pins+=("$line")
done <"$CPU_REQS"
if [[ -z "${TORCH_VERSION:-}" ]]; then
    TORCH_VERSION="$(printf '%s\n' "${cpu_pins[@]}" | sed -n 's/^torch==//p')"
    [[ -n "$TORCH_VERSION" ]] || die "no torch==<version> pin in $CPU_REQS; set TORCH_VERSION"
fi

venv_python="$VENV_DIR/bin/python"
pip=("$venv_python" -m pip install --disable-pip-version-check)

[[ -x "$venv_python" ]] && ! is_dry_run && log "reusing the venv at $VENV_DIR"
[[ -x "$venv_python" ]] || run "$BASE_PYTHON" -m venv "$VENV_DIR"
# no pip config files and no PIP_FIND_LINKS (an empty value would be ignored): only TORCH_INDEX_URL serves torch
run env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "${pip[@]}" --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"
run "$venv_python" "$INFRA_DIR/check_gpu_env.py" --stage torch
run env DS_BUILD_OPS=0 "${pip[@]}" -c "$CPU_REQS" "${cpu_pins[@]}"
# before faiss-gpu goes in: uninstalling faiss-cpu afterwards would delete files of the shared `faiss` module
run "$venv_python" -m pip uninstall --yes --quiet faiss-cpu
run "${pip[@]}" -c "$CPU_REQS" -r "$GPU_REQS"
run "${pip[@]}" --no-deps -r "$ASSET_REQS"
run "${pip[@]}" --no-deps --no-build-isolation -e "$REPO_ROOT/packages/common" -e "$REPO_ROOT/packages/rexrag" \
    -e "$REPO_ROOT/packages/anessuite"
# Fails loudly when a pin moved, faiss-cpu crept back in, or a GPU library cannot see the GPUs.
transformers_pin="$(printf '%s\n' "${cpu_pins[@]}" | sed -n 's/^transformers==//p')"
run "$venv_python" "$INFRA_DIR/check_gpu_env.py" --stage all --transformers "$transformers_pin"
note "done: PYTHON=$venv_python (the infra/ launchers use it automatically)"
