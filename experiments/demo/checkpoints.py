"""The demo's committed checkpoints (`experiments/demo/committed/<name>/`) and the checks that regenerate them.

Two small models trained by the CPU experiments are committed, so that `make demo` shows learning within minutes:

- `rexrag-warmup`: the start policy of experiments/rexrag-cpu-mechanism (its six-stage SFT warm-up, 1.2M parameters,
  4.7 MB). REX-RAG trains from it, instead of from a from-scratch model whose reward stays near zero.
  `make demo-warmup` regenerates it with that experiment's own warm-up stages and compares it.
- `anessuite-cpt-sft`: the +CPT+SFT model of experiments/anessuite-cpu-miniature's revision 6 pre-check (seed 0,
  0.9M parameters, 3.7 MB). The AnesBench branch evaluates it beside the miniature's from-scratch base.
  `make demo-anes-model` regenerates it with that pre-check and compares it.

`SHA256SUMS` lists every file of a folder with its digest; the demo verifies them before it uses a checkpoint (a
truncated file, or a Git LFS pointer in place of the weights, stops it with the file's name).

    python -m experiments.demo.checkpoints verify [NAME ...]             # the committed folders against SHA256SUMS
    python -m experiments.demo.checkpoints compare NAME MODEL_DIR        # a regenerated model, byte for byte
    python -m experiments.demo.checkpoints update NAME MODEL_DIR         # copy it in and rewrite SHA256SUMS
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "committed"
MANIFEST = "SHA256SUMS"
# what each committed folder holds: the files the demo's recipes load (no optimizer state, no training_args.bin)
CHECKPOINTS: dict[str, tuple[str, ...]] = {
    "rexrag-warmup": (
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "prompt_template.txt",
        "tokenizer.json",
        "tokenizer_config.json",
    ),
    "anessuite-cpt-sft": (
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ),
}


# what any other model folder's manifest must list
MODEL_FILES = ("config.json", "model.safetensors")


class CheckpointError(ValueError):
    """A checkpoint folder that does not match its manifest (or a manifest that is malformed)."""


def folder_of(name: str) -> Path:
    if name not in CHECKPOINTS:
        raise CheckpointError(
            f"unknown checkpoint {name!r}; the demo's checkpoints are {', '.join(CHECKPOINTS)}"
        )
    return ROOT / name


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path, files: tuple[str, ...]) -> dict[str, str]:
    """``SHA256SUMS`` (``<hex digest>  <file name>`` per line, as sha256sum writes it) -> {name: digest}; every one
    of ``files`` must be listed."""
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a checkpoint folder must list its files with their SHA-256")
    entries: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name or any(c not in "0123456789abcdef" for c in digest):
            raise CheckpointError(f"{path}:{number}: expected '<64 hex digits>  <file name>', got {line!r}")
        entries[name] = digest
    missing = sorted(set(files) - set(entries))
    if missing:
        raise CheckpointError(f"{path}: no digest for {', '.join(missing)}")
    return entries


def verify(folder: Path, files: tuple[str, ...] | None = None) -> dict[str, str]:
    """Every file of the manifest is present with its digest; returns the manifest. Raises CheckpointError naming
    the file otherwise (a Git LFS pointer or a truncated download has another size and digest). ``files``: what the
    manifest must list; by default the committed checkpoint's files of that name, else ``MODEL_FILES``."""
    entries = read_manifest(folder, files or CHECKPOINTS.get(folder.name, MODEL_FILES))
    for name, digest in entries.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (listed in {folder / MANIFEST})")
        found = sha256(path)
        if found != digest:
            raise CheckpointError(
                f"{path}: SHA-256 {found[:12]}... ({path.stat().st_size} bytes) is not the committed "
                f"{digest[:12]}...; restore it with `git checkout -- {name}` in {folder}"
            )
    return entries


def verify_if_committed(path: Path) -> dict[str, str] | None:
    """``verify`` a folder of ``ROOT``; None for any other model folder (nothing committed to check it against)."""
    return verify(path) if path.resolve().parent == ROOT.resolve() else None


def compare(model_dir: Path, folder: Path, files: tuple[str, ...]) -> list[str]:
    """Names of the files in which ``model_dir`` differs from the committed folder (empty: byte-identical)."""
    entries = read_manifest(folder, files)
    return [
        name
        for name, digest in entries.items()
        if not (model_dir / name).is_file() or sha256(model_dir / name) != digest
    ]


def update(model_dir: Path, folder: Path, files: tuple[str, ...]) -> dict[str, str]:
    """Copy a model folder's ``files`` in and rewrite the manifest."""
    absent = [name for name in files if not (model_dir / name).is_file()]
    if absent:
        raise CheckpointError(f"{model_dir}: not a saved model folder, missing {', '.join(absent)}")
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name in files:
        shutil.copyfile(model_dir / name, folder / name)
        entries[name] = sha256(folder / name)
    (folder / MANIFEST).write_text("".join(f"{d}  {n}\n" for n, d in entries.items()), encoding="utf-8")
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.demo.checkpoints", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("verify", help="check committed folders against their SHA256SUMS (default: all)")
    check.add_argument("names", nargs="*", help=f"of {', '.join(CHECKPOINTS)}")
    for command, text in (
        ("compare", "is MODEL_DIR byte-identical to NAME?"),
        ("update", "copy MODEL_DIR in"),
    ):
        one = sub.add_parser(command, help=text)
        one.add_argument("name", help=f"one of {', '.join(CHECKPOINTS)}")
        one.add_argument("model_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "verify":
            for name in args.names or list(CHECKPOINTS):
                print(
                    f"{folder_of(name)}: {len(verify(folder_of(name), CHECKPOINTS[name]))} files match {MANIFEST}"
                )
        elif args.command == "update":
            copied = update(args.model_dir, folder_of(args.name), CHECKPOINTS[args.name])
            print(f"{folder_of(args.name)}: {len(copied)} files copied from {args.model_dir}")
        else:
            differ = compare(args.model_dir, folder_of(args.name), CHECKPOINTS[args.name])
            if differ:
                print(f"{args.model_dir} differs from the committed {args.name} in: {', '.join(differ)}")
                return 1
            print(f"{args.model_dir} is byte-identical to the committed {args.name} ({folder_of(args.name)})")
    except CheckpointError as err:
        print(f"checkpoints: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
