"""Pre-checks of a REX-RAG setting before any RL run: does the start policy fall into dead ends, and can probes
get it out?

    python -m rexrag precheck --config experiments/rexrag-cpu-mechanism/precheck.yaml

On the held-out questions (``qa.eval_split``, ``qa.max_eval_examples``) the start policy samples ``num_generations``
rollouts per question at ``rollout.temperature`` (the RL setting). Direct check: every wrong original that answers in
a search-enabled round (exactly the originals a probe can be spawned from) is cloned once *per pool sentence*
(:func:`rlcore.rollout.clone_before_answer`: cut before its answer block, the sentence appended) and every clone is
continued by the same policy. Reported (``precheck.json``):

- ``dead_end_rate``: share of questions whose ``num_generations`` originals are all wrong;
- ``orig_accuracy`` over all originals, and ``orig_accuracy_probed``: the originals' accuracy on the questions that
  got probes (the same questions the probe accuracy is measured on);
- ``probe_accuracy``: share of forced probes that answer correctly; ``probe_accuracy_filtered``: the same over the
  ``filter_keep_fraction`` of probes with the highest mean log-prob of their inserted tokens (REX-RAG's filter
  criterion; absent when no scorer is given); ``rescue_rate``: share of dead-end questions with >= 1 correct probe;
- ``probe_lookback_tokens``: mean number of response tokens before a probe's continuation (kept prefix + inserted
  sentence), over all probes and separately over correct and wrong ones: the copy distance the earlier CPU runs
  blamed for failed probes;
- the same split by data source, by pool sentence and by ``prone_prefixes`` (question beginnings a warm-up was
  taught to answer from memory);
- ``checks``: each threshold of ``thresholds`` with the measured value and pass/fail.

``probes.jsonl`` holds every probe (question, sentence, decoded response, correct) for reading. ``PASSED`` is written
when every check passes; with ``require_pass=true`` a missed check is an error (exit 2).
"""

from __future__ import annotations

import json
import logging
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rexrag.pool import load_pool
from rexrag.recipes.common import rollout_inputs
from rexrag.recipes.evaluate import trained_template
from rexrag.recipes.train import QAConfig, RetrieverConfig, load_questions, open_retriever
from rexrag.sampling import is_correct
from rexrag.trie import encode_prompt
from rexrag.trigger import dead_end_rate
from rlcore.config import recipe_main
from rlcore.errors import UserError
from rlcore.generation import HFBackend
from rlcore.models import load_causal_lm, load_tokenizer
from rlcore.rollout import INSERTED_COMPONENTS, RolloutConfig, RolloutEngine, Trajectory, clone_before_answer
from rlcore.runs import make_run_dir
from rlcore.seeding import seed_everything
from rlcore.tracking import write_results_json

logger = logging.getLogger(__name__)

PASSED = "PASSED"  # marker file in output_dir, written when every check passes


class PrecheckFailed(UserError):
    """A pre-registered check missed its mark (``require_pass=true``)."""


@dataclass
class PrecheckThresholds:
    """Pass marks of the pre-registered checks (a setting that misses one is revised before any RL run)."""

    dead_end_rate_min: float = 0.4  # share of questions whose originals are all wrong
    probe_accuracy_min: float = 0.25  # share of forced probes that answer correctly


@dataclass
class PrecheckConfig:
    """Dead-end rate and direct probe check of a start policy (see the module docstring)."""

    model: str = ""  # the start policy (a warm-up's model folder)
    qa: QAConfig = field(default_factory=QAConfig)  # questions: qa.eval_split / qa.max_eval_examples are used
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)  # search backend
    # turn structure and sampling temperature (the RL runs')
    rollout: RolloutConfig = field(
        default_factory=lambda: RolloutConfig(max_turns=4, max_new_tokens_per_turn=40, retrieval_topk=2)
    )
    use_chat_template: bool = False  # wrap prompts in the chat template
    pool: str = "self_doubt_30"  # exploratory prompt pool: every sentence is tried on every wrong original
    num_generations: int = 4  # originals per question (the RL group size)
    prone_prefixes: list[str] = field(default_factory=list)  # question beginnings reported as their own group
    # share of probes kept by inserted-token likelihood for the filtered rate
    filter_keep_fraction: float = 0.25
    thresholds: PrecheckThresholds = field(default_factory=PrecheckThresholds)  # pass marks
    # fail (exit 2) when a check misses its mark; output_dir/PASSED is written only when every check passes, so an
    # experiment's stage `creates: .../PASSED` stops its RL runs until the setting passes
    require_pass: bool = False
    batch_size: int = 64  # prompts per generate call
    seed: int = 0  # sampling seed
    num_threads: int = 1  # torch CPU threads
    output_dir: str = ""  # empty = runs/rexrag-precheck/<time>-<hash>

    def validate(self) -> None:
        if not self.model:
            raise ValueError("model: set the start policy's folder (e.g. a warm-up's output_dir/model)")
        if self.num_generations < 1:
            raise ValueError(f"num_generations must be >= 1, got {self.num_generations}")
        if not 0.0 < self.filter_keep_fraction <= 1.0:
            raise ValueError(f"filter_keep_fraction must lie in (0, 1], got {self.filter_keep_fraction}")
        if self.rollout.greedy:
            raise ValueError("rollout.greedy must be false: the pre-check samples like the RL rollouts")


def force_probes(
    tokenizer,
    pool_prompt_ids: Sequence[list[int]],
    rollout_config: RolloutConfig | None = None,
) -> Callable[[Trajectory, int], list[Trajectory]]:
    """``on_answer`` hook of the direct check: every wrong original gets one probe per pool sentence."""

    def on_answer(traj: Trajectory, round_index: int) -> list[Trajectory]:
        if not traj.is_original or is_correct(traj):
            return []
        clones = []
        for index, ids in enumerate(pool_prompt_ids):
            clone = clone_before_answer(traj, tokenizer, ids, rollout_config)
            clone.metadata["probe_prompt_index"] = index
            clone.metadata["probe_round"] = round_index
            clones.append(clone)
        return clones

    return on_answer


def _rate(hits: Sequence[bool]) -> float | None:
    return sum(hits) / len(hits) if hits else None


def _prone(question: str, prefixes: Sequence[str]) -> bool:
    return any(question.startswith(prefix) for prefix in prefixes)


def summarize_precheck(
    trajectories: Sequence[Trajectory],
    pool: Sequence[str],
    prone_prefixes: Sequence[str] = (),
    inserted_scores: Sequence[float] | None = None,
    filter_keep_fraction: float = 0.25,
    thresholds: PrecheckThresholds | None = None,
) -> dict[str, Any]:
    """The pre-check statistics of one direct-check rollout (originals and forced probes, see module docstring).

    Trajectories carry ``metadata["golden_answers"]``, ``metadata["data_source"]`` and ``metadata["question"]``;
    probes carry ``metadata["probe_prompt_index"]``. ``inserted_scores``: one mean inserted-token log-prob per
    probe, in the order the probes appear in ``trajectories``.
    """
    thresholds = thresholds or PrecheckThresholds()
    originals = [t for t in trajectories if t.is_original]
    probes = [t for t in trajectories if not t.is_original]
    orig_ok = [is_correct(t) for t in originals]
    probe_ok = [is_correct(t) for t in probes]
    question_of = {t.group_id: t.metadata.get("question", "") for t in originals}
    solved: dict[str, bool] = defaultdict(bool)
    for traj, ok in zip(originals, orig_ok):
        solved[traj.group_id] |= ok
    probed = {t.group_id for t in probes}
    rescued = {t.group_id for t, ok in zip(probes, probe_ok) if ok}
    dead = [g for g, ok in solved.items() if not ok]

    def block(orig_select: Callable[[Trajectory], bool], probe_select: Callable[[Trajectory], bool]) -> dict:
        o = [ok for t, ok in zip(originals, orig_ok) if orig_select(t)]
        groups = {t.group_id for t in originals if orig_select(t)}
        p = [ok for t, ok in zip(probes, probe_ok) if probe_select(t)]
        on_probed = [ok for t, ok in zip(originals, orig_ok) if orig_select(t) and t.group_id in probed]
        dead_here = [g for g in dead if g in groups]
        return {
            "questions": len(groups),
            "originals": len(o),
            "orig_accuracy": _rate(o),
            "dead_end_rate": len(dead_here) / len(groups) if groups else None,
            "probes": len(p),
            "probe_accuracy": _rate(p),
            "orig_accuracy_probed": _rate(on_probed),
            "rescue_rate": sum(g in rescued for g in dead_here) / len(dead_here) if dead_here else None,
        }

    summary = block(lambda t: True, lambda t: True)
    summary["dead_end_rate"] = dead_end_rate([t.group_id for t in originals], orig_ok) if originals else None
    if inserted_scores is not None:
        if len(inserted_scores) != len(probes):
            raise ValueError(f"{len(inserted_scores)} inserted scores for {len(probes)} probes")
        keep = max(1, int(len(probes) * filter_keep_fraction)) if probes else 0
        order = sorted(range(len(probes)), key=lambda i: -inserted_scores[i])[:keep]
        summary["probes_filtered"] = keep
        summary["probe_accuracy_filtered"] = _rate([probe_ok[i] for i in order])
    lookback = [probe_lookback(t) for t in probes]
    summary["probe_lookback_tokens"] = {
        "mean": statistics.fmean(lookback) if lookback else None,
        "correct": statistics.fmean([n for n, ok in zip(lookback, probe_ok) if ok])
        if any(probe_ok)
        else None,
        "wrong": statistics.fmean([n for n, ok in zip(lookback, probe_ok) if not ok])
        if not all(probe_ok)
        else None,
    }
    sources = sorted({t.metadata.get("data_source", "") for t in originals})
    summary["by_source"] = {
        s: block(
            lambda t, s=s: t.metadata.get("data_source", "") == s,
            lambda t, s=s: t.metadata.get("data_source", "") == s,
        )
        for s in sources
    }
    if prone_prefixes:
        summary["by_prone"] = {
            name: block(
                lambda t, flag=flag: _prone(question_of.get(t.group_id, ""), prone_prefixes) is flag,
                lambda t, flag=flag: _prone(question_of.get(t.group_id, ""), prone_prefixes) is flag,
            )
            for name, flag in (("prone", True), ("other", False))
        }
    summary["by_sentence"] = {
        sentence: _rate(
            [ok for t, ok in zip(probes, probe_ok) if t.metadata.get("probe_prompt_index") == index]
        )
        for index, sentence in enumerate(pool)
    }
    checks = {
        "dead_end_rate": (summary["dead_end_rate"], thresholds.dead_end_rate_min),
        "probe_accuracy": (summary["probe_accuracy"], thresholds.probe_accuracy_min),
    }
    summary["checks"] = {
        name: {"value": value, "min": minimum, "passed": value is not None and value >= minimum}
        for name, (value, minimum) in checks.items()
    }
    summary["passed"] = all(c["passed"] for c in summary["checks"].values())
    return summary


def probe_lookback(traj: Trajectory) -> int:
    """Response tokens before a probe's first continuation token (the kept prefix plus the inserted sentence):
    how far back, beyond the question's last tokens, the probe has to look to copy the question's entity."""
    inserted = [i for i, code in enumerate(traj.components) if code in INSERTED_COMPONENTS]
    return inserted[-1] + 1 if inserted else 0


def inserted_mean_logprobs(
    model, trajectories: Sequence[Trajectory], temperature: float = 1.0
) -> list[float]:
    """Mean log pi of each trajectory's inserted tokens (REX-RAG's probe-filter score), one forward per row."""
    # torch is heavy (~1 s to import) and only this path needs it
    import torch

    scores = []
    with torch.no_grad():
        for traj in trajectories:
            ids = list(traj.prompt_ids) + list(traj.response_ids)
            logits = model(torch.tensor([ids])).logits[0, :-1].float() / temperature
            logp = torch.log_softmax(logits, dim=-1)
            offset = len(traj.prompt_ids)
            values = [
                float(logp[offset + i - 1, traj.response_ids[i]])
                for i, code in enumerate(traj.components)
                if code in INSERTED_COMPONENTS
            ]
            scores.append(sum(values) / len(values) if values else float("-inf"))
    return scores


def direct_check(engine, tokenizer, examples, template: str, cfg: PrecheckConfig, pool: Sequence[str]):
    """Run originals and forced probes on ``examples``; returns the trajectories (originals first)."""

    prompts, groups, metadata = rollout_inputs(
        examples, tokenizer, template, cfg.use_chat_template, repeat=cfg.num_generations
    )
    questions = [example.question for example in examples for _ in range(cfg.num_generations)]
    for meta, question in zip(metadata, questions):
        meta["question"] = question
    hook = force_probes(tokenizer, [encode_prompt(tokenizer, p) for p in pool], cfg.rollout)
    return engine.run(prompts, groups, metadata, on_answer=hook)


def run(cfg: PrecheckConfig) -> dict[str, Any]:
    # torch is heavy (~1 s to import) and only this path needs it
    import torch

    cfg.validate()
    if not Path(cfg.model).exists():
        raise FileNotFoundError(f"model: {cfg.model} does not exist (train the warm-up first)")
    torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    out = Path(cfg.output_dir) if cfg.output_dir else make_run_dir("rexrag-precheck", cfg)
    out.mkdir(parents=True, exist_ok=True)
    _, examples, paths = load_questions(cfg.qa)
    stored = trained_template(cfg.model)  # the template the warm-up was trained with, when stored beside it
    template_text = stored[0] if stored else cfg.qa.world.template
    pool = load_pool(cfg.pool)
    model = load_causal_lm(cfg.model, dtype=torch.float32).eval()
    tokenizer = load_tokenizer(cfg.model)
    engine = RolloutEngine(
        HFBackend(model, tokenizer, batch_size=cfg.batch_size),
        tokenizer,
        cfg.rollout,
        open_retriever(cfg.retriever, paths),
    )
    logger.info(
        "direct check: %d questions x %d originals, pool of %d", len(examples), cfg.num_generations, len(pool)
    )
    trajectories = direct_check(engine, tokenizer, examples, template_text, cfg, pool)
    probes = [t for t in trajectories if not t.is_original]
    scores = inserted_mean_logprobs(model, probes, cfg.rollout.temperature)
    summary = summarize_precheck(
        trajectories, pool, cfg.prone_prefixes, scores, cfg.filter_keep_fraction, cfg.thresholds
    )
    with (out / "probes.jsonl").open("w", encoding="utf-8") as handle:
        for traj, score in zip(probes, scores):
            record = {
                "question": traj.metadata.get("question"),
                "golden_answers": traj.metadata.get("golden_answers"),
                "sentence": pool[traj.metadata["probe_prompt_index"]],
                "inserted_mean_logprob": score,
                "lookback_tokens": probe_lookback(traj),
                "correct": is_correct(traj),
                "response": tokenizer.decode(traj.response_ids, skip_special_tokens=True),
            }
            handle.write(json.dumps(record) + "\n")
    (out / "precheck.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    write_results_json(out / "results.json", {"precheck": summary}, config=cfg, seeds=[cfg.seed])
    print(format_summary(summary), end="")
    marker = out / PASSED
    if summary["passed"]:
        marker.write_text(json.dumps(summary["checks"], indent=2, sort_keys=True) + "\n", encoding="utf-8")
    else:
        marker.unlink(missing_ok=True)
        if cfg.require_pass:
            missed = [name for name, check in summary["checks"].items() if not check["passed"]]
            raise PrecheckFailed(
                f"pre-check failed ({', '.join(missed)}; see {out / 'precheck.json'}): revise the setting and its "
                "pre-registration before any RL run"
            )
    return summary


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_summary(summary: dict[str, Any]) -> str:
    """A few readable lines: the checks, then the prone / other split."""
    lines = [
        f"questions {summary['questions']}, originals {summary['originals']}, probes {summary['probes']}",
        f"original accuracy {_pct(summary['orig_accuracy'])} (on probed questions "
        f"{_pct(summary['orig_accuracy_probed'])}); probe accuracy {_pct(summary['probe_accuracy'])}"
        + (
            f" (filtered {_pct(summary['probe_accuracy_filtered'])})"
            if "probe_accuracy_filtered" in summary
            else ""
        )
        + f"; rescue rate {_pct(summary['rescue_rate'])}",
    ]
    lookback = summary.get("probe_lookback_tokens", {})
    if lookback.get("mean") is not None:
        lines.append(
            f"probe look-back {lookback['mean']:.1f} tokens (correct probes {_num(lookback['correct'])}, "
            f"wrong {_num(lookback['wrong'])})"
        )
    for name, check in summary["checks"].items():
        verdict = "PASS" if check["passed"] else "FAIL"
        lines.append(f"{verdict} {name} {_pct(check['value'])} (min {_pct(check['min'])})")
    for name, part in summary.get("by_prone", {}).items():
        lines.append(
            f"{name}: dead ends {_pct(part['dead_end_rate'])}, originals {_pct(part['orig_accuracy'])}, "
            f"probes {_pct(part['probe_accuracy'])} ({part['probes']})"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return recipe_main(
        PrecheckConfig,
        lambda cfg: (run(cfg), 0)[1],
        argv,
        description=__doc__.splitlines()[0],
        prog="python -m rexrag precheck",
    )
