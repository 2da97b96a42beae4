"""A diagnostic after revision 4's pre-check (README.md, "Revision 4: pre-check result"; not pre-registered): does the
letter get copied when it stands right after the option's text? Writes a copy of a world's AnesR1 file whose answers
end "<text> D." / "<text>D。" instead of "<text> is option D." / "<text>是选项D。", to be trained with the option
lines "- {text} {letter}." / "{text}{letter}。" (then in ZH the letter is the token right after the text's last
token; in EN a space token stands between). ``--read`` instead reads a finished evaluation: for System 1 answers,
how often the restated option's letter is the letter of the option holding the restated text.

    python experiments/anessuite-cpu-miniature/diag_r4_layout.py --world runs/anessuite-miniature-r3/world \
        --write runs/anessuite-miniature-r4/diag-layout/anesr1.jsonl
    python experiments/anessuite-cpu-miniature/diag_r4_layout.py --world runs/anessuite-miniature-r3/world \
        --read runs/anessuite-miniature-r4/diag-layout/eval/base+SFT-generate/responses.jsonl --layout adjacent
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

SENTENCE = {  # the restated option at the end of an answer, per layout and language: (text, letter)
    ("option", "en"): re.compile(r"(?:^|\. )([^.\n]+?) is option ([A-D])\.\n"),
    ("option", "zh"): re.compile(r"(?:^|。)([^。\n]+?)是选项([A-D])。\n"),
    ("adjacent", "en"): re.compile(r"(?:^|\. )([^.\n]+?) ([A-D])\.\n"),
    ("adjacent", "zh"): re.compile(r"(?:^|。)([^。\n]+?)([A-D])。\n"),
}


def adjacent(reasoning: str, language: str) -> str:
    """The answer with its option sentence in the adjacent layout (the rest unchanged)."""
    if language == "zh":
        new, count = re.subn(r"是选项([A-D])。\n", r"\1。\n", reasoning)
    else:
        new, count = re.subn(r" is option ([A-D])\.\n", r" \1.\n", reasoning)
    if count != 1:
        raise ValueError(f"no single option sentence in {reasoning!r}")
    return new


def read(world: Path, responses: Path, layout: str) -> dict[str, Counter]:
    items = {}
    for lang in ("en", "zh"):
        for item in json.loads((world / "benchmark" / f"anesbench_{lang}.json").read_text(encoding="utf-8")):
            items[f"{lang}/{item['id']}"] = item
    counts: dict[str, Counter] = {"en": Counter(), "zh": Counter()}
    for line in responses.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        item, lang = items[row["key"]], row["key"].split("/")[0]
        if item["category"] != 1:
            continue
        tally = counts[lang]
        tally["system1"] += 1
        found = list(SENTENCE[(layout, lang)].finditer(row["response"] + "\n"))
        if not found:
            tally["no option sentence"] += 1
            continue
        text, letter = found[-1].group(1).strip(), found[-1].group(2)
        holders = [k for k in "ABCD" if item[k] == text]
        tally["text is the gold option's"] += item[item["target"]] == text
        if holders:
            tally["text is an option"] += 1
            tally["letter is that option's"] += letter in holders
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Adjacent-letter option layout (diagnostic).")
    parser.add_argument("--world", required=True, help="a revision-3 world folder")
    parser.add_argument("--write", help="write the AnesR1 file with adjacent-layout answers here")
    parser.add_argument("--read", help="an evaluation's responses.jsonl to tally")
    parser.add_argument("--layout", default="adjacent", choices=["adjacent", "option"], help="layout read")
    args = parser.parse_args(argv)
    world = Path(args.world)
    if args.write:
        rows = [
            json.loads(x)
            for x in (world / "anesr1" / "anesr1.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        for row in rows:
            row["reasoning"] = adjacent(row["reasoning"], row["language"])
        out = Path(args.write)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"{len(rows)} records -> {out}")
    if args.read:
        for lang, tally in read(world, Path(args.read), args.layout).items():
            print(lang, dict(tally))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
