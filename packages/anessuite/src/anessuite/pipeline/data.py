"""Pipeline data preparation: real releases or the synthetic world -> CPT / SFT / RLVR JSONL files.

Where the data comes from is decided once, by :func:`plan_data`, and never by silent substitution:

* training paths (``data.corpus``, ``data.anesqa``, ``data.anesr1``) all empty: the generated synthetic world
  stands in for all three (the CPU default), and for the benchmark too unless ``data.benchmark`` is given;
* otherwise the released files: every path an enabled stage reads must be given and exist, and an error names
  the config key when one is empty or missing. The one exception is ``data.anesr1``: AnesR1 is not released, so
  when it is not given the GRPO stage (which needs its verifiable MCQs) is skipped with a warning, and SFT may
  not list it in ``data.sft_sources``.

Every file goes through the converters in ``anessuite.convert`` (streamed); the synthetic world writes the same
formats as the real releases, so both take one code path. Prepared files are reused on a re-run
(``data/DONE.json``).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from anessuite.convert import convert_corpus, convert_qa, convert_r1
from anessuite.mcq import SchemaError
from anessuite.pipeline.config import DataPrepConfig, PipelineConfig
from anessuite.prompts import PromptConfig
from anessuite.synthetic.generate import WorldDataConfig, generate_world_data
from rlcore.config import identity_dict
from rlcore.io import iter_jsonl_records, read_jsonl

__all__ = ["DATA_KEYS", "DataPlan", "PreparedData", "check_sft_chats", "plan_data", "prepare_data"]

logger = logging.getLogger(__name__)

PreparedData = dict[str, Path]  # cpt, sft, rl, benchmark (the ones the enabled stages read)
DATA_KEYS = ("corpus", "anesqa", "anesr1", "benchmark")
TRAINING_KEYS = DATA_KEYS[:3]
_WHAT = {
    "corpus": "the AnesCorpus folder (parquet, `text` column)",
    "anesqa": "the AnesQA folder (question / answer)",
    "anesr1": "the AnesR1 folder (MCQs with reasoning)",
    "benchmark": "the AnesBench folder (anesbench_en.json / anesbench_zh.json)",
}
ANESR1_MISSING = (
    "data.anesr1 is not given (AnesR1 is not released): the GRPO stage, which trains on its verifiable MCQs, "
    "is skipped; give data.anesr1=<AnesR1 folder> to run it"
)


@dataclass
class DataPlan:
    """Where each data set comes from, which ones the enabled stages read, and which stages cannot run."""

    synthetic: bool  # training paths all empty: the generated world stands in (and for an empty benchmark)
    needed: dict[str, str] = field(default_factory=dict)  # data key -> the enabled stage that reads it
    skipped_stages: dict[str, str] = field(default_factory=dict)  # stage -> why it does not run


def plan_data(cfg: PipelineConfig) -> DataPlan:
    """Check the data paths against the enabled stages; raise ``ValueError`` naming the config key.

    Training paths all empty means the synthetic world. Otherwise each path an enabled stage reads must be given
    and must exist; ``data.anesr1`` alone may be left empty, which skips the GRPO stage. A given benchmark must
    exist either way.
    """
    data = cfg.data
    unknown = sorted(set(data.sft_sources) - {"anesqa", "anesr1"})
    if unknown:
        raise ValueError(f"data.sft_sources: unknown source(s) {unknown}; use anesqa and/or anesr1")
    needed: dict[str, str] = {}
    if data.sft_replay < 0:
        raise ValueError(f"data.sft_replay must be >= 0, got {data.sft_replay}")
    if cfg.cpt.enabled:
        needed["corpus"] = "the CPT stage (cpt.enabled)"
    elif cfg.sft.enabled and data.sft_replay > 0:
        needed["corpus"] = "the SFT stage's replay of CPT documents (data.sft_replay)"
    if cfg.sft.enabled and "anesqa" in data.sft_sources:
        needed["anesqa"] = "the SFT stage (data.sft_sources lists anesqa)"
    if cfg.sft.enabled and "anesr1" in data.sft_sources:
        needed["anesr1"] = "the SFT stage (data.sft_sources lists anesr1)"
    elif cfg.grpo.enabled:
        needed["anesr1"] = "the GRPO stage (grpo.enabled)"
    if cfg.eval.enabled:
        needed["benchmark"] = "the stage evaluations (eval.enabled)"
    plan = DataPlan(synthetic=not any(getattr(data, key) for key in TRAINING_KEYS), needed=needed)
    for key, reader in needed.items():
        value = getattr(data, key)
        if not value and (plan.synthetic or (key == "anesr1" and reader.startswith("the GRPO stage"))):
            if not plan.synthetic:
                plan.skipped_stages["grpo"] = ANESR1_MISSING
            continue
        if not value:
            extra = (
                " (AnesR1 is not released: remove anesr1 from data.sft_sources)" if key == "anesr1" else ""
            )
            raise ValueError(
                f"data.{key} is empty, but {reader} reads it{extra}: set data.{key}=<{_WHAT[key]}>, or leave "
                f"data.corpus, data.anesqa and data.anesr1 all empty to train on the generated synthetic world"
            )
        if not Path(value).exists():
            raise ValueError(f"data.{key}: {value} does not exist ({reader} reads {_WHAT[key]})")
    return plan


def _mix(sources: list[Path], out: Path, seed: int) -> int:
    """Concatenate JSONL files and shuffle the lines (seeded)."""
    lines: list[str] = []
    for source in sources:
        lines += [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(seed).shuffle(lines)
    out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def _replay(corpus: Path, out: Path, count: int, seed: int) -> int:
    """``count`` CPT documents (seeded draw without replacement, all of them if fewer) as SFT chats whose
    assistant turn is the document, after an empty user turn."""
    documents = [record["text"] for record in read_jsonl(corpus)]
    chosen = random.Random(seed).sample(documents, min(count, len(documents)))
    with out.open("w", encoding="utf-8") as handle:
        for text in chosen:
            messages = [{"role": "user", "content": ""}, {"role": "assistant", "content": text}]
            handle.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    return len(chosen)


_ROLES = ("system", "user", "assistant")


def check_sft_chats(path: str | Path, key: str = "data.sft_extra") -> int:
    """Check every record of a JSONL of SFT chats before training reads it: ``{"messages": [...]}``, each message an
    object with a ``role`` (system / user / assistant) and a string ``content``, the last one the assistant's (the
    SFT stage trains on that turn). Returns the number of records; raises ``ValueError`` naming ``key`` and
    ``<file>:<line>``."""
    try:
        records = list(iter_jsonl_records(path, error=ValueError, what="JSONL of SFT chats"))
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"{key}: {err}") from err
    for line, record in records:
        where = f"{key}: {path}:{line}"
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError(
                f"{where}: 'messages' must be a non-empty list of chat messages, got {messages!r}"
            )
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in _ROLES:
                raise ValueError(f"{where}: messages[{index}] needs a role among {_ROLES}, got {message!r}")
            if not isinstance(message.get("content"), str):
                raise ValueError(f"{where}: messages[{index}].content must be a string, got {message!r}")
        if messages[-1]["role"] != "assistant":
            raise ValueError(
                f"{where}: the last message must be the assistant's (SFT trains on it), got roles "
                f"{[message['role'] for message in messages]}"
            )
    if not records:
        raise ValueError(f"{key}: {path} holds no chats")
    return len(records)


def _converted(key: str, path: str, convert):
    """Run one converter; a failure names the config key the input came from."""
    try:
        return convert()
    except (FileNotFoundError, SchemaError, ValueError) as err:
        raise type(err)(f"data.{key} ({path}): {err}") from err


def prepare_data(
    cfg: DataPrepConfig,
    folder: str | Path,
    seed: int = 0,
    prompt: PromptConfig | None = None,
    plan: DataPlan | None = None,
) -> PreparedData:
    """Write ``cpt.jsonl``, ``sft.jsonl``, ``rl.jsonl`` under ``folder`` and return them with the benchmark.

    ``plan`` (from :func:`plan_data`) says whether the synthetic world stands in and which files the enabled
    stages read; with released files only those are converted. Without a plan every path must be given, or
    every path empty. ``prompt`` renders the MCQ user turn of the AnesR1 SFT chats and RL prompts (the
    evaluation's prompt)."""
    prompt = prompt or PromptConfig()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "DONE.json"
    prepared = {"cpt": folder / "cpt.jsonl", "sft": folder / "sft.jsonl", "rl": folder / "rl.jsonl"}
    sources = {key: getattr(cfg, key) for key in DATA_KEYS}
    synthetic = plan.synthetic if plan is not None else not any(sources[key] for key in TRAINING_KEYS)
    if synthetic:
        world_dir = folder / "world"
        if not (world_dir / "manifest.json").exists():
            generate_world_data(world_dir, WorldDataConfig(seed=cfg.world_seed))
        world = {
            "corpus": world_dir / "corpus",
            "anesqa": world_dir / "anesqa" / "AnesQA.parquet",
            "anesr1": world_dir / "anesr1" / "anesr1.jsonl",
            "benchmark": world_dir / "benchmark",
        }
        sources = {key: value or str(world[key]) for key, value in sources.items()}
        needed = set(DATA_KEYS)  # the world is small: every file is prepared
    else:
        needed = set(DATA_KEYS) if plan is None else set(plan.needed)
        if plan is not None and "grpo" in plan.skipped_stages:
            needed.discard("anesr1")
        empty = [f"data.{key}" for key in DATA_KEYS if key in needed and not sources[key]]
        if empty:
            raise ValueError(
                f"{', '.join(empty)}: empty; give every data path, or none for the synthetic world"
            )
    if "benchmark" in needed:
        prepared["benchmark"] = Path(sources["benchmark"])
    # settings added later are left out at their default, so prepared folders written before them stay valid
    wanted = {"config": identity_dict(cfg), "sources": sources, "prompt": asdict(prompt)}
    if done.exists() and json.loads(done.read_text()) == json.loads(json.dumps(wanted)):
        logger.info("reusing prepared data in %s", folder)
        return prepared
    unknown = sorted(set(cfg.sft_sources) - {"anesqa", "anesr1"})
    if unknown:
        raise ValueError(f"data.sft_sources: unknown source(s) {unknown}; use anesqa and/or anesr1")
    stats = {}
    if "corpus" in needed:
        stats["cpt"] = _converted(
            "corpus",
            sources["corpus"],
            lambda: convert_corpus(sources["corpus"], prepared["cpt"], cfg.corpus_lang),
        )
    parts: list[Path] = []
    if "anesqa" in cfg.sft_sources and "anesqa" in needed:
        stats["sft_anesqa"] = _converted(
            "anesqa",
            sources["anesqa"],
            lambda: convert_qa(
                sources["anesqa"], folder / "sft_anesqa.jsonl", cfg.sft_lang, cfg.qa_system_prompt
            ),
        )
        parts.append(folder / "sft_anesqa.jsonl")
    if "anesr1" in needed:
        r1 = sources["anesr1"]
        stats["anesr1"] = _converted(
            "anesr1",
            r1,
            lambda: convert_r1(
                r1,
                folder / "sft_anesr1.jsonl",
                prepared["rl"],
                lang="all",
                prompt=prompt,
                answer=cfg.sft_answer,
            ),
        )
        if "anesr1" in cfg.sft_sources:
            if cfg.sft_lang != "all":
                convert_r1(
                    r1,
                    folder / "sft_anesr1.jsonl",
                    None,
                    lang=cfg.sft_lang,
                    prompt=prompt,
                    answer=cfg.sft_answer,
                )
            parts.append(folder / "sft_anesr1.jsonl")
        if cfg.rl_lang != "all":
            convert_r1(r1, None, prepared["rl"], lang=cfg.rl_lang, prompt=prompt)
    if cfg.sft_replay > 0 and parts:
        records = sum(
            1 for part in parts for line in part.read_text(encoding="utf-8").splitlines() if line.strip()
        )
        stats["sft_replay"] = _replay(
            prepared["cpt"], folder / "sft_replay.jsonl", round(cfg.sft_replay * records), seed
        )
        parts.append(folder / "sft_replay.jsonl")
    if cfg.sft_extra and parts:
        if not Path(cfg.sft_extra).is_file():
            raise FileNotFoundError(f"data.sft_extra: {cfg.sft_extra} does not exist (a JSONL of SFT chats)")
        stats["sft_extra"] = check_sft_chats(cfg.sft_extra)
        parts.append(Path(cfg.sft_extra))
    stats["sft_mixed"] = _mix(parts, prepared["sft"], seed)
    (folder / "stats.json").write_text(json.dumps(stats, indent=1), encoding="utf-8")
    done.write_text(json.dumps(wanted, indent=1), encoding="utf-8")
    logger.info("prepared pipeline data in %s: %s", folder, stats)
    return prepared
