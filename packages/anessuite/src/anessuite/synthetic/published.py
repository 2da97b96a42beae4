"""A generated benchmark with the published AnesBench sizes and exact 2026 schema, plus model-like responses, for
the scale check (load -> score -> tables on 7,872 items) and the HTTP throughput measurement.

    python -m anessuite synth --published-sizes --out DIR      # DIR/benchmark/anesbench_{en,zh}.json, DIR/responses.jsonl

Stems and options are filler text (this is about volume and layout, not content): English and Chinese, 4-9
options with the release's mix dominated by 4 and 5, UUID ids, int ``category``. The responses mimic what models
write: a few hundred characters of reasoning ending in an English or Chinese answer line, some hedges, some
responses cut at the token cap.
"""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

from anessuite.mcq import LETTERS

__all__ = ["PUBLISHED_SIZES", "write_published_size_benchmark"]

# The dataset card (2026): per file, System 1 / System 1.x / System 2.
PUBLISHED_SIZES = {"en": (2960, 1028, 355), "zh": (2784, 534, 211)}
_OPTION_COUNTS = (4, 4, 4, 5, 5, 5, 5, 6, 9)
_EN_WORDS = "patient dose airway propofol block spinal pressure induction opioid reversal monitoring".split()
_ZH_WORDS = "患者 剂量 气道 丙泊酚 阻滞 腰麻 血压 诱导 阿片 拮抗 监测".split()


def _text(rng: random.Random, words: list[str], count: int, joiner: str) -> str:
    return joiner.join(rng.choice(words) for _ in range(count))


def _response(rng: random.Random, lang: str, letters: str, gold: str) -> dict[str, object]:
    words, joiner = (_EN_WORDS, " ") if lang == "en" else (_ZH_WORDS, "")
    letter = gold if rng.random() < 0.55 else rng.choice(letters)
    reasoning = ". ".join(_text(rng, words, 12, joiner) for _ in range(rng.randint(3, 12)))
    roll = rng.random()
    if roll < 0.05:  # cut at the token cap mid-sentence
        return {"response": reasoning, "finish_reason": "length", "num_tokens": 2048}
    if roll < 0.10:  # a hedge between two letters
        other = rng.choice(letters)
        line = f"The answer is {letter} or maybe {other}." if lang == "en" else f"答案是{letter}或{other}吧？"
    elif roll < 0.55:
        line = f"Answer: {letter}" if lang == "en" else f"答案：{letter}"
    else:  # the other language's answer line
        line = f"答案：{letter}" if lang == "en" else f"The correct answer is {letter}."
    return {"response": f"{reasoning}\n{line}", "finish_reason": "stop", "num_tokens": len(reasoning) // 4}


def write_published_size_benchmark(out: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write ``out/benchmark/anesbench_{en,zh}.json`` (published sizes) and ``out/responses.jsonl``."""
    out = Path(out)
    rng = random.Random(f"anessuite-published-sizes-{seed}")
    (out / "benchmark").mkdir(parents=True, exist_ok=True)
    responses = []
    for lang, sizes in PUBLISHED_SIZES.items():
        words, joiner = (_EN_WORDS, " ") if lang == "en" else (_ZH_WORDS, "")
        records = []
        for category, count in enumerate(sizes, start=1):
            for _ in range(count):
                choice_num = rng.choice(_OPTION_COUNTS)
                letters = LETTERS[:choice_num]
                record = {"id": str(uuid.UUID(int=rng.getrandbits(128), version=4))}
                record["question"] = _text(rng, words, rng.randint(8, 30), joiner) + (
                    "?" if lang == "en" else "？"
                )
                record.update({letter: _text(rng, words, rng.randint(1, 4), joiner) for letter in letters})
                record.update({"choice_num": choice_num, "target": rng.choice(letters), "category": category})
                records.append(record)
                responses.append({"id": record["id"], **_response(rng, lang, letters, record["target"])})
        rng.shuffle(records)
        (out / "benchmark" / f"anesbench_{lang}.json").write_text(
            json.dumps(records, ensure_ascii=False, indent=4), encoding="utf-8"
        )
    with open(out / "responses.jsonl", "w", encoding="utf-8") as handle:
        for record in responses:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return {"benchmark": out / "benchmark", "responses": out / "responses.jsonl"}
