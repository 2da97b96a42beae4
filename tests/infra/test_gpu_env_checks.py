"""The GPU environment checks that run without a GPU: the dependency resolver's command and report checks
(``infra/check_gpu_deps.py``) and the compiled-module import check of ``infra/check_gpu_env.py``."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from infra_helpers import INFRA, REPO


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, INFRA / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


deps = _load("check_gpu_deps")
env_check = _load("check_gpu_env")

# torch 2.13.0's PyPI Linux wheel metadata (requires_dist, abridged): the CUDA 13.0 build.
TORCH_CU13 = [
    "filelock",
    'cuda-toolkit[cublas,cudart,cufft]==13.0.3; platform_system == "Linux"',
    'nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux"',
    'nvidia-nccl-cu13==2.29.7; platform_system == "Linux"',
]
TORCH_CU12 = ['nvidia-cuda-runtime-cu12==12.8.90; platform_system == "Linux"', "nvidia-cudnn-cu12==9.10.2.21"]


def _report(**overrides) -> dict:
    packages = {
        "torch": ("2.13.0", TORCH_CU13),
        "transformers": ("5.17.0", []),
        "vllm": ("0.31.0", []),
        "faiss-gpu": ("1.15.1", []),
        "fastapi": ("0.136.3", []),
    }
    packages.update(overrides)
    return {
        "install": [
            {"metadata": {"name": name, "version": version, "requires_dist": requires}}
            for name, (version, requires) in packages.items()
            if version is not None
        ]
    }


def test_resolver_command_is_the_setup_scripts_set(tmp_path: Path):
    command, env = deps.resolver_command("py", tmp_path / "r.json")
    cpu, gpu = REPO / "requirements" / "cpu.txt", REPO / "requirements" / "gpu.txt"
    assert command[:4] == ["py", "-m", "pip", "install"]
    assert {"--dry-run", "--ignore-installed"} <= set(command)
    assert command[command.index("--report") + 1] == str(tmp_path / "r.json")
    assert command[command.index("-c") + 1] == str(cpu)
    assert command[command.index("-r") + 1] == str(gpu)
    pins = [arg for arg in command if "==" in arg]
    assert "torch==2.13.0" in pins and not any(p.startswith("faiss-cpu") for p in pins)
    assert len(pins) == len(deps.read_pins(cpu)) - 1, "every cpu.txt pin but faiss-cpu"
    assert f"{REPO / 'packages' / 'common'}[gpu]" in command, "the gpu extra's own bounds are resolved too"
    # a local CPU torch wheel must not stand in for the CUDA build (pip ignores an empty PIP_FIND_LINKS)
    assert env == {"PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": None}
    assert "--extra-index-url" not in command, "PyPI's torch 2.13.0 is the CUDA 13 build"
    other, _ = deps.resolver_command(
        "py", tmp_path / "r.json", torch_index_url="https://example.invalid/cu130"
    )
    assert other[other.index("--extra-index-url") + 1] == "https://example.invalid/cu130"


def test_unpinned_requirement_names_file_and_line(tmp_path: Path):
    bad = tmp_path / "cpu.txt"
    bad.write_text("# comment\ntorch==2.13.0\nfastapi>=0.1\n")
    with pytest.raises(ValueError, match=r"cpu.txt:3: expected an exact pin"):
        deps.read_pins(bad)


def test_pins_satisfy_vllm_0_31_fastapi_bound():
    """vllm 0.31.0 requires fastapi[standard]>=0.133,<0.137 (its wheel metadata); cpu.txt is its constraint."""
    version = deps.pin_of(deps.read_pins(REPO / "requirements" / "cpu.txt"), "fastapi")
    assert (0, 133) <= tuple(int(x) for x in version.split(".")[:2]) < (0, 137)
    common = (REPO / "packages" / "common" / "pyproject.toml").read_text()
    assert '"fastapi>=0.136"' in common


def test_a_good_report_passes():
    versions, problems = deps.check_report(_report())
    assert problems == [] and versions["torch"] == "2.13.0"


@pytest.mark.parametrize(
    "overrides, message",
    [
        # a cu12x torch: vllm._C_stable_libtorch links libcudart.so.13 and would not import
        ({"torch": ("2.13.0", TORCH_CU12)}, "built for CUDA 12"),
        # the CPU build has no CUDA dependency at all
        ({"torch": ("2.13.0", ["filelock"])}, "none (a CPU build)"),
        ({"transformers": ("5.18.0", [])}, "transformers resolves to 5.18.0, pinned 5.17.0"),
        ({"vllm": (None, [])}, "vllm resolves to nothing"),
        ({"faiss-cpu": ("1.15.1", [])}, "faiss-cpu 1.15.1 is in the set"),
    ],
)
def test_a_bad_report_names_the_problem(overrides, message):
    _, problems = deps.check_report(_report(**overrides))
    assert any(message in problem for problem in problems), problems


def test_torch_cuda_majors_reads_both_dependency_styles():
    assert deps.torch_cuda_majors(TORCH_CU13) == ["13"]
    assert deps.torch_cuda_majors(TORCH_CU12) == ["12"]
    assert deps.torch_cuda_majors(["sympy>=1.13"]) == []


def test_check_gpu_deps_dry_run_prints_the_command(capsys):
    assert deps.main(["--dry-run", "--python", "py"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("env PIP_CONFIG_FILE=/dev/null -u PIP_FIND_LINKS py -m pip install --dry-run")


@pytest.fixture
def no_vllm_modules():
    """Forget any ``vllm`` modules before and after the test, so a fake package never leaks to other tests."""

    def forget():
        for name in [n for n in sys.modules if n == "vllm" or n.startswith("vllm.")]:
            del sys.modules[name]

    saved = {n: m for n, m in sys.modules.items() if n == "vllm" or n.startswith("vllm.")}
    forget()
    yield forget
    forget()
    sys.modules.update(saved)


def test_vllm_compiled_kernels_must_import(tmp_path: Path, monkeypatch, no_vllm_modules):
    """A vllm whose compiled module fails to load (as with a torch of another CUDA major) is reported."""
    package = tmp_path / "vllm"
    package.mkdir()
    (package / "__init__.py").write_text("__version__ = '0.31.0'\n")
    (package / "_C_stable_libtorch.py").write_text(
        "raise ImportError('libcudart.so.13: cannot open shared object file')\n"
    )
    (package / "_moe_C_stable_libtorch.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    problems = env_check.check_vllm()
    assert (
        len(problems) == 1 and "vllm._C_stable_libtorch" in problems[0] and "libcudart.so.13" in problems[0]
    )
    (package / "_C_stable_libtorch.py").write_text("")
    no_vllm_modules()
    assert env_check.check_vllm() == []


def test_missing_vllm_is_a_problem(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import raises ImportError
    problems = env_check.check_vllm()
    assert len(problems) == 1 and problems[0].startswith("vllm does not import")


def test_setup_installs_torchs_cuda13_build_by_default(dry_run, tmp_path: Path):
    """PyPI's torch 2.13.0 Linux wheel is the CUDA 13.0 build that vllm 0.31.0's kernels link against."""
    out = dry_run("setup_gpu_env.sh", VENV_DIR=str(tmp_path / "venv"))
    torch_step = out.command_with("--index-url")
    assert torch_step[torch_step.index("--index-url") + 1] == "https://pypi.org/simple"


def test_configs_ask_only_for_attention_kernels_the_install_provides():
    """transformers raises at model load for flash_attention_2 when flash-attn is absent, and the gpu extra
    does not install it (PyPI ships flash-attn as source only)."""
    import re

    gpu_reqs = (REPO / "requirements" / "gpu.txt").read_text()
    allowed = {"eager", "sdpa"} | ({"flash_attention_2"} if "flash-attn" in gpu_reqs else set())
    seen = {}
    for path in [*REPO.glob("packages/*/configs/**/*.yaml"), *REPO.glob("experiments/**/*.yaml")]:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            found = re.match(r"\s*attn_implementation:\s*([^\s#]+)", line)
            if found and found.group(1) not in ("null", "~"):
                seen[f"{path.relative_to(REPO)}:{number}"] = found.group(1)
    assert seen, "the AnesSuite paper configs set attn_implementation"
    assert {where: value for where, value in seen.items() if value not in allowed} == {}
