"""Check a GPU node's environment after infra/setup_gpu_env.sh; exits non-zero with the reason.

    python infra/check_gpu_env.py --stage torch                 # right after installing torch
    python infra/check_gpu_env.py --stage all --transformers 5.17.0

``torch``: torch is a CUDA build of the CUDA major vllm was built against (13 for vllm 0.31.0). ``all``: also
torch sees a GPU, vllm imports together with its compiled kernels (``vllm._C_stable_libtorch`` and
``vllm._moe_C_stable_libtorch``, which link ``libcudart.so.13`` and libtorch: a torch of another CUDA major
or ABI fails here, not at the first generation), faiss imports and sees the GPUs, faiss-cpu is not installed
next to faiss-gpu, and transformers is exactly the pinned version (vllm 0.31.0 rejects >=5.18).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

# The CUDA major version vllm 0.31.0's wheel links (readelf -d vllm/_C_stable_libtorch.abi3.so: libcudart.so.13).
VLLM_CUDA_MAJOR = "13"
# vllm's CUDA platform imports these at start-up (vllm/platforms/cuda.py); the wheel has no plain vllm._C.
VLLM_COMPILED_MODULES = ("vllm._C_stable_libtorch", "vllm._moe_C_stable_libtorch")


def check_torch() -> list[str]:
    import torch

    if not torch.version.cuda:
        return [f"torch {torch.__version__} is the CPU build; set TORCH_INDEX_URL to a CUDA wheel index"]
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda})")
    major = torch.version.cuda.split(".")[0]
    if major != VLLM_CUDA_MAJOR:
        return [
            f"torch {torch.__version__} is a CUDA {torch.version.cuda} build; vllm 0.31.0's kernels link the "
            f"CUDA {VLLM_CUDA_MAJOR} runtime: reinstall torch from a CUDA {VLLM_CUDA_MAJOR} index (PyPI's "
            "torch 2.13.0 is one)"
        ]
    return []


def check_vllm() -> list[str]:
    """vllm imports, and so do the compiled kernel modules its CUDA platform loads at start-up."""
    try:
        vllm = importlib.import_module("vllm")
    except Exception as err:  # noqa: BLE001 - report any import failure
        return [f"vllm does not import: {err}"]
    problems = []
    for name in VLLM_COMPILED_MODULES:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - e.g. OSError/ImportError for libcudart.so.13
            problems.append(
                f"{name} (vllm {getattr(vllm, '__version__', '?')}'s compiled kernels) does not import: {err}; "
                f"a torch build of another CUDA major or version than vllm was built with causes this"
            )
    if not problems:
        print(f"vllm {getattr(vllm, '__version__', '?')} and its compiled kernels import")
    return problems


def check_all(transformers_pin: str | None) -> list[str]:
    problems = check_torch()
    import torch

    if not torch.cuda.is_available():
        problems.append("torch cannot see a GPU on this node (driver, CUDA_VISIBLE_DEVICES?)")
    else:
        print(f"{torch.cuda.device_count()} GPUs: {torch.cuda.get_device_name(0)}")
    installed = {name: _version(name) for name in ("transformers", "vllm", "faiss-gpu", "faiss-cpu")}
    print(", ".join(f"{name} {version or '-'}" for name, version in installed.items()))
    if installed["faiss-cpu"]:
        problems.append("faiss-cpu is installed next to faiss-gpu (same module): pip uninstall faiss-cpu")
    if transformers_pin and installed["transformers"] != transformers_pin:
        problems.append(
            f"transformers is {installed['transformers']}, pinned {transformers_pin} (vllm needs <5.18)"
        )
    problems += check_vllm()
    try:
        import faiss

        if faiss.get_num_gpus() < 1:
            problems.append("faiss sees no GPU (is faiss-gpu installed?)")
    except Exception as err:  # noqa: BLE001
        problems.append(f"faiss does not import: {err}")
    return problems


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("torch", "all"), default="all")
    parser.add_argument(
        "--transformers", default=None, help="the transformers version that must be installed"
    )
    args = parser.parse_args(argv)
    problems = check_torch() if args.stage == "torch" else check_all(args.transformers)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"GPU environment OK ({args.stage})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
