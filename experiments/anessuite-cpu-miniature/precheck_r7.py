"""Revision 7's pre-check (README.md, "Revisions", 7): revision 2's thresholds (a) and (b), judged by
``precheck_r2.py`` unchanged; the pre-check passes only if both hold in both languages. Reported besides, without a
threshold (the README expects them near chance): the chains' figures, per language the System 1.x and System 2
items pooled (90 + 60 = 150) and each level with its 95% interval (2,000 bootstrap resamples of the items) and its
abstentions, and whether the pooled interval's lower end is above chance (``reported``).

    python experiments/anessuite-cpu-miniature/precheck_r7.py --world runs/anessuite-miniature-r3/world \
        --run runs/anessuite-miniature-r7/precheck-seed1 --row base+SFT --out precheck/revision7.json
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHAIN_LEVELS = ("system1.x", "system2")  # (c) pools these levels


def _precheck_r2():
    spec = importlib.util.spec_from_file_location("miniature_precheck_r2", HERE / "precheck_r2.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def chain_figures(scored: list[dict[str, Any]], bootstrap) -> dict[str, Any]:
    """Per language: the pooled System 1.x + System 2 accuracy with its interval, each level's, and abstentions."""
    out: dict[str, Any] = {}
    for lang in ("en", "zh"):
        rows = [s for s in scored if s["language"] == lang and s["level"] in CHAIN_LEVELS]
        missing = [level for level in CHAIN_LEVELS if not any(s["level"] == level for s in rows)]
        if missing:
            raise ValueError(f"scored.jsonl: no {' / '.join(missing)} items in language {lang}")
        values = [float(s["correct"]) for s in rows]
        figures: dict[str, Any] = {
            "pooled": {"accuracy": sum(values) / len(values), "ci95": bootstrap(values), "n": len(values)}
        }
        for level in CHAIN_LEVELS:
            level_rows = [s for s in rows if s["level"] == level]
            level_values = [float(s["correct"]) for s in level_rows]
            figures[level] = {
                "accuracy": sum(level_values) / len(level_values),
                "ci95": bootstrap(level_values),
                "n": len(level_values),
                "abstained": sum(s.get("prediction") is None for s in level_rows),
            }
        out[lang] = figures
    return out


def chain_verdict(figures: dict[str, Any], chance: float) -> dict[str, bool]:
    """Whether the pooled interval's lower end is above ``chance``, per language (reported, not a threshold)."""
    return {
        f"chains_above_chance_{lang}": figures[lang]["pooled"]["ci95"][0] > chance for lang in ("en", "zh")
    }


def main(argv: Sequence[str] | None = None) -> int:
    r2 = _precheck_r2()
    import argparse

    parser = argparse.ArgumentParser(description="Revision 7's pre-check on one pipeline run.")
    parser.add_argument(
        "--world", required=True, help="folder written by `anessuite synth --design miniature3`"
    )
    parser.add_argument(
        "--run", required=True, help="the pipeline's output_dir (eval/<row>-generate/ inside)"
    )
    parser.add_argument("--row", default="base+SFT", help="the row the thresholds judge")
    parser.add_argument(
        "--probes", nargs="*", default=[], help="label=probe.json pairs to copy into the report"
    )
    parser.add_argument("--out", required=True, help="the report (JSON)")
    args = parser.parse_args(argv)
    r2_out = Path(args.out).with_name(Path(args.out).stem + "-r2.json")
    forwarded = ["--world", args.world, "--run", args.run, "--row", args.row, "--out", str(r2_out)]
    r2.main(forwarded + (["--probes", *args.probes] if args.probes else []))
    report = json.loads(r2_out.read_text(encoding="utf-8"))
    r2_out.unlink()
    eval_dir = Path(args.run) / "eval" / f"{args.row}-generate"
    scored = r2._jsonl(eval_dir / "scored.jsonl")
    chains = chain_figures(scored, r2.bootstrap_interval)
    report["chains"] = {
        "levels_pooled": list(CHAIN_LEVELS),
        **chains,
        "reported": chain_verdict(chains, r2.CHANCE),
    }
    Path(args.out).write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    for lang in ("en", "zh"):
        pooled = chains[lang]["pooled"]
        print(
            f"{lang}: System 1.x + 2 accuracy {pooled['accuracy']:.3f} [{pooled['ci95'][0]:.3f}, {pooled['ci95'][1]:.3f}]"
        )
    print(f"pre-check {'PASSED' if report['verdict']['passed'] else 'FAILED'} (thresholds (a), (b) only)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
