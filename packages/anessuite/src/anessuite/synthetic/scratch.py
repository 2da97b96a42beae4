"""A base model trained from nothing: a byte-level BPE tokenizer fitted on a synthetic world's training text (CPT
corpus, AnesQA, AnesR1; never the benchmark) and a randomly initialised small Qwen2 sized to it, saved as a plain
Hugging Face folder that ``anessuite.pipeline`` takes as ``base_model``. It knows no language and no fact before
CPT, so every stage's effect is the stage's own.

    python -m anessuite synth --design miniature --out runs/anessuite-miniature/world --scratch-model DIR
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from rlcore.models import scratch_qwen2_config, train_bpe_tokenizer

__all__ = ["ScratchModelConfig", "capital_space_tokenizer", "world_training_texts", "write_scratch_model"]

logger = logging.getLogger(__name__)


@dataclass
class ScratchModelConfig:
    """Size of the from-scratch candidate (about 1M parameters at the defaults)."""

    vocab_size: int = 2048  # BPE vocabulary fitted on the world's training text
    hidden_size: int = 128  # transformer width
    num_layers: int = 4  # decoder layers
    num_heads: int = 4  # attention heads
    num_kv_heads: int = 2  # key/value heads
    intermediate_size: int = 384  # MLP width
    max_positions: int = 1024  # longest context
    seed: int = 0  # initialisation seed
    # isolate the space before a capital letter as its own token, so a capitalised name is the same pieces at a
    # sentence's start and inside it (miniature revision 3); False keeps the plain byte-level pre-tokenizer
    space_before_capital: bool = False


def world_training_texts(world_dir: str | Path) -> list[str]:
    """The texts a tokenizer may see: CPT documents, AnesQA pairs, AnesR1 questions/options/reasoning."""
    # pyarrow costs ~0.12 s to import and only parquet files need it
    import pyarrow.parquet as pq

    world_dir = Path(world_dir)
    corpus_files = sorted((world_dir / "corpus").glob("*.parquet"))
    if not corpus_files:
        raise FileNotFoundError(f"{world_dir / 'corpus'}: no CPT parquet files (run `anessuite synth` first)")
    texts = [t for f in corpus_files for t in pq.read_table(f).to_pydict()["text"]]
    qa = pq.read_table(world_dir / "anesqa" / "AnesQA.parquet").to_pydict()
    texts += qa["question"] + qa["answer"]
    for line in (world_dir / "anesr1" / "anesr1.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        texts += [record["question"], record["reasoning"], *record["options"].values()]
    return texts


def capital_space_tokenizer(texts: list[str], vocab_size: int):
    """:func:`rlcore.models.train_bpe_tokenizer` whose pre-tokenizer first splits off the space before a capital
    letter: "of Koradrol" and "Koradrol is" both give the pieces of "Koradrol"."""
    return train_bpe_tokenizer(texts, vocab_size, split_before_capital=True)


def write_scratch_model(
    world_dir: str | Path, out: str | Path, cfg: ScratchModelConfig | None = None
) -> Path:
    """Fit the tokenizer, initialise the model, save both (with ``scratch_config.json``) under ``out``."""
    # torch is heavy (~1 s to import) and only this path needs it
    import torch
    from transformers import Qwen2ForCausalLM

    cfg = cfg or ScratchModelConfig()
    out = Path(out)
    texts = world_training_texts(world_dir)
    if cfg.space_before_capital:
        tokenizer = capital_space_tokenizer(texts, cfg.vocab_size)
    else:
        tokenizer = train_bpe_tokenizer(texts, vocab_size=cfg.vocab_size)
    torch.manual_seed(cfg.seed)
    config = scratch_qwen2_config(tokenizer, cfg)
    model = Qwen2ForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "scratch_config.json").write_text(
        json.dumps({**asdict(cfg), "world": str(world_dir)}, indent=1), encoding="utf-8"
    )
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "from-scratch base model (%d parameters, vocab %d) written to %s", n_params, len(tokenizer), out
    )
    return out
