"""Resolve the GPU node's requirement set with pip's resolver, installing nothing (``make check-gpu-deps``).

    python infra/check_gpu_deps.py [--report out.json] [--torch-index-url URL] [--dry-run]

The set is what ``infra/setup_gpu_env.sh`` installs: torch at the pin of ``requirements/cpu.txt``, every other
pin of that file except ``faiss-cpu``, ``requirements/gpu.txt``, and the three packages (``rlcore[gpu]``, so the
extra's own bounds are checked too), with ``cpu.txt`` as a constraint file. pip runs with ``--dry-run
--ignore-installed --report``: it downloads package metadata from the index (a few minutes, about 270
packages), resolves, and writes what it would install. pip's configuration files and ``PIP_FIND_LINKS`` are
switched off, as for the setup script's torch step, so a local CPU torch wheel or index cannot stand in for the
CUDA build (an empty ``PIP_FIND_LINKS=`` does not do that: pip ignores empty variables). ``PIP_INDEX_URL``
still applies, for a site mirror.

After pip resolves, the report is checked for what the GPU stack needs and pip would not notice: torch is the
pinned version and a CUDA 13 build (vllm 0.31.0's compiled kernels link ``libcudart.so.13``); vllm,
transformers and faiss-gpu are at their pins; faiss-cpu is not in the set. Exit status: 0 when all hold.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPI = "https://pypi.org/simple"
# vllm 0.31.0's wheel links libcudart.so.13; the PyPI torch 2.13.0 wheel depends on cuda-toolkit 13.0.x.
REQUIRED_CUDA_MAJOR = "13"
SHOWN = (
    "torch",
    "vllm",
    "transformers",
    "trl",
    "deepspeed",
    "faiss-gpu",
    "fastapi",
    "starlette",
    "uvicorn",
    "cuda-toolkit",
    "nvidia-cuda-runtime",
    "flashinfer-python",
)


def read_pins(path: Path) -> list[str]:
    """The requirement lines of a pip requirements file (comments and blanks dropped)."""
    pins = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "==" not in line:
            raise ValueError(
                f"{path}:{number}: expected an exact pin '<name>==<version>', got {raw.strip()!r}"
            )
        pins.append(line)
    return pins


def pin_of(pins: list[str], name: str) -> str | None:
    for pin in pins:
        if _normalise(pin.split("==")[0]) == _normalise(name):
            return pin.split("==", 1)[1]
    return None


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolver_command(
    python: str, report: Path, repo: Path = REPO, torch_index_url: str = PYPI
) -> tuple[list[str], dict[str, str | None]]:
    """The pip command line and environment changes (None: unset) that resolve the GPU set into ``report``."""
    cpu_txt, gpu_txt = repo / "requirements" / "cpu.txt", repo / "requirements" / "gpu.txt"
    cpu_pins = [pin for pin in read_pins(cpu_txt) if _normalise(pin.split("==")[0]) != "faiss-cpu"]
    read_pins(gpu_txt)  # validated: an unpinned GPU requirement is an error here, not a surprise on the node
    command = [
        python,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--disable-pip-version-check",
        "--report",
        str(report),
        "-c",
        str(cpu_txt),
    ]
    if torch_index_url.rstrip("/") != PYPI:
        command += ["--extra-index-url", torch_index_url]
    command += cpu_pins + ["-r", str(gpu_txt)]
    command += [
        f"{repo / 'packages' / 'common'}[gpu]",
        str(repo / "packages" / "rexrag"),
        str(repo / "packages" / "anessuite"),
    ]
    return command, {"PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": None}


def check_report(report: dict, repo: Path = REPO) -> tuple[dict[str, str], list[str]]:
    """(resolved versions by normalised name, problems) of a pip ``--report`` against the project's pins."""
    installs = report.get("install")
    if not isinstance(installs, list) or not installs:
        return {}, ["the pip report lists nothing to install"]
    versions, requires = {}, {}
    for item in installs:
        metadata = item.get("metadata", {})
        name = _normalise(metadata.get("name", ""))
        versions[name] = metadata.get("version", "")
        requires[name] = metadata.get("requires_dist") or []
    cpu_pins = read_pins(repo / "requirements" / "cpu.txt")
    gpu_pins = read_pins(repo / "requirements" / "gpu.txt")
    problems = []
    for name, wanted in (
        ("torch", pin_of(cpu_pins, "torch")),
        ("transformers", pin_of(cpu_pins, "transformers")),
        ("vllm", pin_of(gpu_pins, "vllm")),
        ("faiss-gpu", pin_of(gpu_pins, "faiss-gpu")),
    ):
        got = versions.get(name)
        if wanted and got != wanted:
            problems.append(f"{name} resolves to {got or 'nothing'}, pinned {wanted}")
    if "faiss-cpu" in versions:
        problems.append(f"faiss-cpu {versions['faiss-cpu']} is in the set next to faiss-gpu (same module)")
    cuda_majors = torch_cuda_majors(requires.get("torch", []))
    if "torch" in versions and cuda_majors != [REQUIRED_CUDA_MAJOR]:
        problems.append(
            f"torch {versions['torch']} is built for CUDA {'/'.join(cuda_majors) or 'none (a CPU build)'}; "
            f"vllm's kernels need CUDA {REQUIRED_CUDA_MAJOR} (set TORCH_INDEX_URL to the matching index)"
        )
    return versions, problems


def torch_cuda_majors(requires_dist: list[str]) -> list[str]:
    """CUDA major versions a torch wheel's dependencies name: ``cuda-toolkit==13.0.3`` or ``nvidia-*-cu13``."""
    majors = set()
    for requirement in requires_dist:
        name = re.match(r"\s*([A-Za-z0-9_.-]+)", requirement)
        if name is None:
            continue
        suffix = re.fullmatch(r"nvidia-.+-cu(\d+)", _normalise(name.group(1)))
        if suffix:
            majors.add(suffix.group(1))
        elif _normalise(name.group(1)) in ("cuda-toolkit", "nvidia-cuda-runtime"):
            pinned = re.search(r"==\s*(\d+)\.", requirement)
            if pinned:
                majors.add(pinned.group(1))
    return sorted(majors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=None, help="keep pip's JSON report here")
    parser.add_argument("--torch-index-url", default=os.environ.get("TORCH_INDEX_URL", PYPI))
    parser.add_argument("--python", default=sys.executable, help="interpreter whose pip resolves")
    parser.add_argument("--dry-run", action="store_true", help="print the pip command and exit")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        report_path = args.report or Path(scratch) / "report.json"
        command, env = resolver_command(args.python, report_path, torch_index_url=args.torch_index_url)
        shown = " ".join(
            f"-u {key}" if value is None else f"{key}={shlex.quote(value)}" for key, value in env.items()
        )
        print(f"env {shown} {shlex.join(command)}", flush=True)
        if args.dry_run:
            return 0
        child_env = {key: value for key, value in os.environ.items() if key not in env}
        child_env.update({key: value for key, value in env.items() if value is not None})
        result = subprocess.run(command, env=child_env, check=False)
        if result.returncode != 0:
            print(
                f"error: pip could not resolve the GPU requirement set (exit {result.returncode})",
                file=sys.stderr,
            )
            return 1
        versions, problems = check_report(json.loads(report_path.read_text()))
    print(f"pip resolved {len(versions)} packages; key versions:")
    for name in SHOWN:
        print(f"  {name:<20} {versions.get(name, '-')}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(
            "GPU requirement set resolves (torch is a CUDA "
            f"{REQUIRED_CUDA_MAJOR} build, pins unchanged, no faiss-cpu)"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
