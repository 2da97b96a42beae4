"""Check a GPU node's environment after infra/setup_gpu_env.sh; exits non-zero with the reason.

    python infra/check_gpu_env.py --stage torch                 # right after installing torch
    python infra/check_gpu_env.py --stage all --transformers 5.17.0

``torch``: torch is a CUDA build. ``all``: also torch sees a GPU, vllm and faiss import, faiss sees the GPUs,
faiss-cpu is not installed next to faiss-gpu, and transformers is exactly the pinned version (vllm 0.31.0
rejects >=5.18).
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata


def check_torch() -> list[str]:
    import torch

    if not torch.version.cuda:
        return [f"torch {torch.__version__} is the CPU build; set TORCH_INDEX_URL to a CUDA wheel index"]
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda})")
    return []


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
    try:
        import vllm  # noqa: F401
    except Exception as err:  # noqa: BLE001 - report any import failure
        problems.append(f"vllm does not import: {err}")
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
