"""The demo's committed warm-up policy (`experiments/demo/warmup-policy/`) and the check that regenerates it.

The folder holds the start policy of experiments/rexrag-cpu-mechanism (its six-stage SFT warm-up, 1.2M parameters,
about 5 MB) so that `make demo` trains REX-RAG from a policy that already searches and reads, instead of a
from-scratch model whose reward stays near zero. `SHA256SUMS` lists every file of the folder with its digest; the demo
verifies them before it starts (a truncated file, or a Git LFS pointer in place of the weights, stops it with the
file's name).

    python -m experiments.demo.warmup verify                    # the committed folder against SHA256SUMS
    python -m experiments.demo.warmup compare runs/rexrag-cpu-mechanism/sft/model   # a regenerated model, byte for byte
    python -m experiments.demo.warmup update runs/rexrag-cpu-mechanism/sft/model    # copy it in and rewrite SHA256SUMS

`make demo-warmup` regenerates the policy with the mechanism experiment's own warm-up stages (each reused if its
output exists) and runs `compare`.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parent / "warmup-policy"
MANIFEST = "SHA256SUMS"
# what a saved policy folder holds (rexrag sft's model/ output); the demo needs every one of them
FILES = (
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "prompt_template.txt",
    "tokenizer.json",
    "tokenizer_config.json",
)


class WarmupError(ValueError):
    """A warm-up folder that does not match its manifest (or a manifest that is malformed)."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, str]:
    """``SHA256SUMS`` (``<hex digest>  <file name>`` per line, as sha256sum writes it) -> {name: digest}."""
    path = folder / MANIFEST
    if not path.is_file():
        raise WarmupError(f"{path}: missing; the warm-up folder must list its files with their SHA-256")
    entries: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name or any(c not in "0123456789abcdef" for c in digest):
            raise WarmupError(f"{path}:{number}: expected '<64 hex digits>  <file name>', got {line!r}")
        entries[name] = digest
    missing = sorted(set(FILES) - set(entries))
    if missing:
        raise WarmupError(f"{path}: no digest for {', '.join(missing)}")
    return entries


def verify(folder: Path = FOLDER) -> dict[str, str]:
    """Every file of the manifest is present with its digest; returns the manifest. Raises WarmupError naming the
    file otherwise (a Git LFS pointer or a truncated download has another size and digest)."""
    entries = read_manifest(folder)
    for name, digest in entries.items():
        path = folder / name
        if not path.is_file():
            raise WarmupError(f"{path}: missing (listed in {folder / MANIFEST})")
        found = sha256(path)
        if found != digest:
            raise WarmupError(
                f"{path}: SHA-256 {found[:12]}... ({path.stat().st_size} bytes) is not the committed "
                f"{digest[:12]}...; restore it with `git checkout -- {name}` in {folder}"
            )
    return entries


def compare(model_dir: Path, folder: Path = FOLDER) -> list[str]:
    """Names of the files in which ``model_dir`` differs from the committed policy (empty: byte-identical)."""
    entries = read_manifest(folder)
    return [
        name
        for name, digest in entries.items()
        if not (model_dir / name).is_file() or sha256(model_dir / name) != digest
    ]


def update(model_dir: Path, folder: Path = FOLDER) -> dict[str, str]:
    """Copy a policy folder's files in and rewrite the manifest."""
    absent = [name for name in FILES if not (model_dir / name).is_file()]
    if absent:
        raise WarmupError(f"{model_dir}: not a saved policy folder, missing {', '.join(absent)}")
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name in FILES:
        shutil.copyfile(model_dir / name, folder / name)
        entries[name] = sha256(folder / name)
    (folder / MANIFEST).write_text("".join(f"{d}  {n}\n" for n, d in entries.items()), encoding="utf-8")
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.demo.warmup", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("verify", help="check the committed folder against its SHA256SUMS")
    for name, text in (("compare", "is MODEL_DIR byte-identical to it?"), ("update", "copy MODEL_DIR in")):
        sub.add_parser(name, help=text).add_argument("model_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "verify":
            print(f"{FOLDER}: {len(verify())} files match {MANIFEST}")
        elif args.command == "update":
            print(f"{FOLDER}: {len(update(args.model_dir))} files copied from {args.model_dir}")
        else:
            differ = compare(args.model_dir)
            if differ:
                print(f"{args.model_dir} differs from the committed warm-up in: {', '.join(differ)}")
                return 1
            print(f"{args.model_dir} is byte-identical to the committed warm-up ({FOLDER})")
    except WarmupError as err:
        print(f"warmup: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
