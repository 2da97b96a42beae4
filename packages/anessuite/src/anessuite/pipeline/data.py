"""Pipeline data preparation: real releases or the synthetic world -> CPT / SFT / RLVR JSONL files.

Every file goes through the converters in ``anessuite.convert``; the synthetic world writes the same formats
as the real releases, so both take one code path. Prepared files are reused on a re-run (``data/DONE.json``).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict
from pathlib import Path

from anessuite.convert import convert_corpus, convert_qa, convert_r1
from anessuite.pipeline.config import DataPrepConfig
from anessuite.prompts import PromptConfig

__all__ = ["PreparedData", "prepare_data"]

logger = logging.getLogger(__name__)

PreparedData = dict[str, Path]  # cpt, sft, rl, benchmark


def _mix(sources: list[Path], out: Path, seed: int) -> int:
    """Concatenate JSONL files and shuffle the lines (seeded)."""
    lines: list[str] = []
    for source in sources:
        lines += [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(seed).shuffle(lines)
    out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def prepare_data(
    cfg: DataPrepConfig, folder: str | Path, seed: int = 0, prompt: PromptConfig | None = None
) -> PreparedData:
    """Write ``cpt.jsonl``, ``sft.jsonl``, ``rl.jsonl`` under ``folder`` and return them with the benchmark.

    ``prompt`` renders the MCQ user turn of the AnesR1 SFT chats and RL prompts (the evaluation's prompt)."""
    prompt = prompt or PromptConfig()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "DONE.json"
    prepared = {"cpt": folder / "cpt.jsonl", "sft": folder / "sft.jsonl", "rl": folder / "rl.jsonl"}
    sources = {"corpus": cfg.corpus, "anesqa": cfg.anesqa, "anesr1": cfg.anesr1, "benchmark": cfg.benchmark}
    if not all(sources.values()):
        from anessuite.synthetic.generate import WorldDataConfig, generate_world_data

        world_dir = folder / "world"
        if not (world_dir / "manifest.json").exists():
            generate_world_data(world_dir, WorldDataConfig(seed=cfg.world_seed))
        synthetic = {
            "corpus": world_dir / "corpus",
            "anesqa": world_dir / "anesqa" / "AnesQA.parquet",
            "anesr1": world_dir / "anesr1" / "anesr1.jsonl",
            "benchmark": world_dir / "benchmark",
        }
        sources = {key: value or str(synthetic[key]) for key, value in sources.items()}
    prepared["benchmark"] = Path(sources["benchmark"])
    wanted = {"config": asdict(cfg), "sources": sources, "prompt": asdict(prompt)}
    if done.exists() and json.loads(done.read_text()) == json.loads(json.dumps(wanted)):
        logger.info("reusing prepared data in %s", folder)
        return prepared
    unknown = sorted(set(cfg.sft_sources) - {"anesqa", "anesr1"})
    if unknown:
        raise ValueError(f"data.sft_sources: unknown source(s) {unknown}; use anesqa and/or anesr1")
    stats = {"cpt": convert_corpus(sources["corpus"], prepared["cpt"], cfg.corpus_lang)}
    parts: list[Path] = []
    if "anesqa" in cfg.sft_sources:
        stats["sft_anesqa"] = convert_qa(
            sources["anesqa"], folder / "sft_anesqa.jsonl", cfg.sft_lang, cfg.qa_system_prompt
        )
        parts.append(folder / "sft_anesqa.jsonl")
    stats["anesr1"] = convert_r1(
        sources["anesr1"], folder / "sft_anesr1.jsonl", prepared["rl"], lang="all", prompt=prompt
    )
    if "anesr1" in cfg.sft_sources:
        if cfg.sft_lang != "all":
            convert_r1(sources["anesr1"], folder / "sft_anesr1.jsonl", None, lang=cfg.sft_lang, prompt=prompt)
        parts.append(folder / "sft_anesr1.jsonl")
    if cfg.rl_lang != "all":
        convert_r1(sources["anesr1"], None, prepared["rl"], lang=cfg.rl_lang, prompt=prompt)
    stats["sft_mixed"] = _mix(parts, prepared["sft"], seed)
    (folder / "stats.json").write_text(json.dumps(stats, indent=1), encoding="utf-8")
    done.write_text(json.dumps(wanted, indent=1), encoding="utf-8")
    logger.info("prepared pipeline data in %s: %s", folder, stats)
    return prepared
