"""A knowledge probe that isolates continued pre-training: does the model assign the true fact a higher
likelihood than the same sentence with the fact's value swapped for another value of the same attribute?

A probe statement is a template with one ``{value}`` slot, the true value and distractor values, e.g.

    {"id": "f1", "language": "en", "attribute": "organ", "template": "Velozine is cleared by {value}.",
     "true_value": "the kidneys", "distractors": ["the liver", "the lungs", "plasma esterases"]}

Each filled sentence is scored as the summed log-probability of all its tokens, conditioned on one leading
document-start token (the tokenizer's BOS, else its EOS, the token that separates CPT documents). The probe
reports, per language (and per phrasing when statements carry one): the share of statements whose true sentence
scores highest (``accuracy``; chance is 1 / number of candidates), the mean rank of the true sentence (1 = best)
and the mean log-likelihood margin (true minus the mean of the distractors, in nats). The margin moves with
CPT even when accuracy on a multiple-choice benchmark does not.

    python -m anessuite probe --model <folder or embedded name> --statements probe/facts.jsonl --out <dir>
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from anessuite.mcq import SchemaError
from rlcore.models import load_causal_lm, load_tokenizer

__all__ = [
    "FactStatement",
    "load_statements",
    "score_texts",
    "probe_statements",
    "summarize",
    "run_probe",
    "main",
]

logger = logging.getLogger(__name__)

_REQUIRED = ("id", "language", "template", "true_value", "distractors")


@dataclass(frozen=True)
class FactStatement:
    """One fact in a fixed template; candidates are the true value and the distractor values."""

    id: str
    language: str
    template: str  # contains exactly one "{value}"
    true_value: str
    distractors: tuple[str, ...]
    attribute: str = ""
    phrasing: str = ""  # e.g. "corpus" (a sentence CPT saw) or "heldout" (a wording it never saw)

    def candidates(self) -> list[str]:
        return [self.fill(self.true_value), *(self.fill(v) for v in self.distractors)]

    def fill(self, value: str) -> str:
        return self.template.replace("{value}", value)


def _statement(record: Any, where: str) -> FactStatement:
    if not isinstance(record, dict):
        raise SchemaError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for name in _REQUIRED:
        if name not in record:
            raise SchemaError(f"{where}: missing field '{name}'")
    template = record["template"]
    if not isinstance(template, str) or template.count("{value}") != 1:
        raise SchemaError(f"{where}: field 'template' must be a string with exactly one '{{value}}' slot")
    distractors = record["distractors"]
    if (
        not isinstance(distractors, list)
        or not distractors
        or not all(isinstance(d, str) for d in distractors)
    ):
        raise SchemaError(f"{where}: field 'distractors' must be a non-empty list of strings")
    true_value = record["true_value"]
    if not isinstance(true_value, str) or not true_value:
        raise SchemaError(f"{where}: field 'true_value' must be a non-empty string")
    if true_value in distractors or len(set(distractors)) != len(distractors):
        raise SchemaError(f"{where}: field 'distractors' repeats a value or contains the true value")
    return FactStatement(
        id=str(record["id"]),
        language=str(record["language"]),
        template=template,
        true_value=true_value,
        distractors=tuple(distractors),
        attribute=str(record.get("attribute", "")),
        phrasing=str(record.get("phrasing", "")),
    )


def load_statements(path: str | Path) -> list[FactStatement]:
    """Statements from a JSONL file (one object per line); errors name the file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"{path}: probe statements file not found")
    statements = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise SchemaError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        statements.append(_statement(record, f"{path}:{number}"))
    if not statements:
        raise SchemaError(f"{path}: no probe statements")
    return statements


def _prefix_id(tokenizer) -> int:
    token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token_id is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to start a statement with")
    return int(token_id)


def score_texts(model, tokenizer, texts: Sequence[str], batch_size: int = 16) -> list[float]:
    """Summed log-probability (nats) of every token of each text, after one document-start token."""
    # torch is heavy (~1 s to import) and only this path needs it
    import torch

    prefix = _prefix_id(tokenizer)
    encoded = [[prefix, *tokenizer(text, add_special_tokens=False)["input_ids"]] for text in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prefix
    device = next(model.parameters()).device
    scores: list[float] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(encoded), batch_size):
                chunk = encoded[start : start + batch_size]
                width = max(len(ids) for ids in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, seq in enumerate(chunk):  # right padding: positions stay 0..n-1 for every row
                    ids[row, : len(seq)] = torch.tensor(seq)
                    mask[row, : len(seq)] = 1
                ids, mask = ids.to(device), mask.to(device)
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
                logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
                picked = logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
                scores += (picked * mask[:, 1:]).sum(dim=1).tolist()
    finally:
        model.train(was_training)
    return scores


@dataclass
class StatementResult:
    id: str
    language: str
    attribute: str
    phrasing: str
    true_logprob: float
    distractor_logprobs: list[float] = field(default_factory=list)

    @property
    def rank(self) -> int:  # 1 = the true sentence scores highest; ties count against it
        return 1 + sum(score >= self.true_logprob for score in self.distractor_logprobs)

    @property
    def margin(self) -> float:
        return self.true_logprob - sum(self.distractor_logprobs) / len(self.distractor_logprobs)


def probe_statements(model, tokenizer, statements: Sequence[FactStatement], batch_size: int = 16):
    """Score every candidate sentence of every statement; one :class:`StatementResult` per statement."""
    texts = [text for st in statements for text in st.candidates()]
    scores = score_texts(model, tokenizer, texts, batch_size=batch_size)
    results, cursor = [], 0
    for st in statements:
        n = 1 + len(st.distractors)
        chunk = scores[cursor : cursor + n]
        cursor += n
        results.append(StatementResult(st.id, st.language, st.attribute, st.phrasing, chunk[0], chunk[1:]))
    return results


def _aggregate(results: Sequence[StatementResult]) -> dict[str, float]:
    n = len(results)
    margins = [r.margin for r in results]
    mean_margin = sum(margins) / n
    std = math.sqrt(sum((m - mean_margin) ** 2 for m in margins) / (n - 1)) if n > 1 else 0.0
    return {
        "n": n,
        "accuracy": sum(r.rank == 1 for r in results) / n,
        "chance": sum(1 / (1 + len(r.distractor_logprobs)) for r in results) / n,
        "mean_rank": sum(r.rank for r in results) / n,
        "mean_margin": mean_margin,
        "margin_sem": std / math.sqrt(n) if n > 1 else 0.0,
    }


def summarize(results: Sequence[StatementResult]) -> dict[str, Any]:
    """Aggregates overall, per language, and per language x phrasing (when phrasings are given)."""
    if not results:
        raise ValueError("no probe results to summarize")
    summary: dict[str, Any] = {"all": _aggregate(results), "by_language": {}, "by_phrasing": {}}
    for lang in sorted({r.language for r in results}):
        summary["by_language"][lang] = _aggregate([r for r in results if r.language == lang])
    for lang, phrasing in sorted({(r.language, r.phrasing) for r in results if r.phrasing}):
        key = f"{lang}/{phrasing}"
        summary["by_phrasing"][key] = _aggregate(
            [r for r in results if r.language == lang and r.phrasing == phrasing]
        )
    return summary


def run_probe(
    model_spec: str, statements_path: str | Path, out: str | Path | None = None, batch_size: int = 16
):
    """Probe ``model_spec`` (folder, embedded name or hub id); writes ``probe.json`` under ``out`` if given."""
    statements = load_statements(statements_path)
    tokenizer = load_tokenizer(model_spec, padding_side="right")
    model = load_causal_lm(model_spec)
    logger.info("probing %s on %d statements", model_spec, len(statements))
    results = probe_statements(model, tokenizer, statements, batch_size=batch_size)
    report = {
        # as given (a path relative to the run, or an embedded name), never the machine path
        "model": str(model_spec),
        "statements": str(statements_path),
        "summary": summarize(results),
        "per_statement": [{**asdict(r), "rank": r.rank, "margin": r.margin} for r in results],
    }
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "probe.json").write_text(
            json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8"
        )
    return report


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{'group':<16} {'n':>5} {'acc':>6} {'chance':>6} {'rank':>6} {'margin':>8}"]
    rows = [("all", summary["all"]), *summary["by_language"].items(), *summary["by_phrasing"].items()]
    for name, agg in rows:
        lines.append(
            f"{name:<16} {agg['n']:>5} {agg['accuracy']:>6.3f} {agg['chance']:>6.3f} "
            f"{agg['mean_rank']:>6.2f} {agg['mean_margin']:>8.3f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="anessuite probe", description="Log-likelihood of true fact statements vs distractors."
    )
    parser.add_argument("--model", required=True, help="model folder, embedded name or hub id")
    parser.add_argument("--statements", required=True, help="JSONL of probe statements (see module doc)")
    parser.add_argument("--out", default=None, help="folder for probe.json")
    parser.add_argument("--batch-size", type=int, default=16, help="sentences per forward pass")
    args = parser.parse_args(None if argv is None else list(argv))
    report = run_probe(args.model, args.statements, args.out, batch_size=args.batch_size)
    print(format_summary(report["summary"]))
    return 0
