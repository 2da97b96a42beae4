"""One prompt per run: the template comes from the training data when it carries prompts, is stored with the run
(resolved config, run folder, final model, checkpoints), and evaluation uses it; any mismatch names both."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from flashrag_layout import OFFICIAL_SHAPE_TEMPLATE, official_rows, write_flashrag, write_parquet

from rexrag.data.prepare import prepare_data
from rexrag.data.qa import QAExample, load_flashrag_jsonl, load_qa_file
from rexrag.data.template import DEFAULT_TEMPLATE, TemplateError, render_prompt
from rexrag.recipes.common import SHORT_TEMPLATE, rollout_inputs
from rexrag.recipes.evaluate import EvalConfig, evaluation_template
from rexrag.recipes.train import (
    PromptTemplateState,
    QAConfig,
    RexRagTrainConfig,
    load_questions,
    resolve_template,
    to_records,
    write_template,
)
from rlcore.config import load_config
from rlcore.generation.testing import build_tiny_tokenizer
from rlcore.rollout import encode_chat_prompt
from rlcore.trainer.data import encode_record_prompt

PAPER = Path(__file__).resolve().parents[2] / "packages" / "rexrag" / "configs" / "paper"
PAPER_TRAIN = sorted(p for p in PAPER.glob("*.yaml") if not p.name.startswith("eval"))


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def _parquet(tmp_path: Path, template: str = OFFICIAL_SHAPE_TEMPLATE) -> list[QAExample]:
    return load_qa_file(
        str(
            write_parquet(
                official_rows("nq", ["q one?", "q two?"], template=template), tmp_path / "t.parquet"
            )
        )
    )


def _jsonl(tmp_path: Path) -> list[QAExample]:
    path = tmp_path / "nq" / "test.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"id": "test_0", "question": "who is x", "golden_answers": ["y"]}\n')
    return load_flashrag_jsonl(path)


def test_training_data_decides_the_template(tmp_path):
    train, evaluation = _parquet(tmp_path), _jsonl(tmp_path)
    # the world default (SHORT_TEMPLATE) does not override stored prompts: the data's template is the run's
    assert resolve_template(QAConfig(), train, evaluation) == OFFICIAL_SHAPE_TEMPLATE
    # an explicit template equal to the data's is fine; a different one is an error naming both
    assert (
        resolve_template(QAConfig(template=OFFICIAL_SHAPE_TEMPLATE), train, evaluation)
        == OFFICIAL_SHAPE_TEMPLATE
    )
    with pytest.raises(
        TemplateError, match=r"training data.*Work out the answer.*qa.template.*Answer the question"
    ):
        resolve_template(QAConfig(template=DEFAULT_TEMPLATE), train, evaluation)
    # evaluation files that carry another template are refused
    other = _parquet(tmp_path / "other", template="Other words. Q: {question}\n")
    with pytest.raises(TemplateError, match=r"training.*evaluation data"):
        resolve_template(QAConfig(), train, other)
    # without stored prompts: the explicit template, else the world's
    assert resolve_template(QAConfig(template=DEFAULT_TEMPLATE), evaluation, evaluation) == DEFAULT_TEMPLATE
    assert resolve_template(QAConfig(), evaluation, evaluation) == SHORT_TEMPLATE


def test_stored_messages_are_used_only_under_their_own_template(tmp_path, tok):
    [example, _] = _parquet(tmp_path)
    same, _, _ = rollout_inputs([example], tok, OFFICIAL_SHAPE_TEMPLATE, True)
    other, _, _ = rollout_inputs([example], tok, DEFAULT_TEMPLATE, True)
    assert same[0] == encode_chat_prompt(tok, example.prompt_messages)
    assert other[0] == encode_chat_prompt(
        tok, [{"role": "user", "content": render_prompt("q one?", DEFAULT_TEMPLATE)}]
    )


def test_checkpoint_state_refuses_another_template():
    state = PromptTemplateState(DEFAULT_TEMPLATE)
    PromptTemplateState(DEFAULT_TEMPLATE).load_state_dict(state.state_dict())
    with pytest.raises(
        TemplateError, match=r"the checkpoint uses .*Answer the question.* this run uses .*Search with"
    ):
        PromptTemplateState(SHORT_TEMPLATE).load_state_dict(state.state_dict())


def test_evaluation_uses_the_checkpoints_template(tmp_path):
    run = tmp_path / "run"
    write_template(OFFICIAL_SHAPE_TEMPLATE, run)  # the run folder (intermediate checkpoints live below it)
    final = run / "final"
    write_template(OFFICIAL_SHAPE_TEMPLATE, final)
    jsonl = _jsonl(tmp_path)
    for model in (final, run / "checkpoints"):
        assert evaluation_template(EvalConfig(model=str(model)), jsonl) == OFFICIAL_SHAPE_TEMPLATE
    # an explicit different template is a mismatch naming both, unless the override is asked for
    cfg = EvalConfig(model=str(final), qa=QAConfig(template=DEFAULT_TEMPLATE))
    with pytest.raises(
        TemplateError, match=r"training \(.*prompt_template.txt\) uses .*Work out.*qa.template"
    ):
        evaluation_template(cfg, jsonl)
    assert evaluation_template(replace(cfg, allow_template_mismatch=True), jsonl) == DEFAULT_TEMPLATE
    # evaluation files carrying another template than training's are refused too
    other = _parquet(tmp_path / "other", template="Other words. Q: {question}\n")
    with pytest.raises(TemplateError, match=r"evaluation data"):
        evaluation_template(EvalConfig(model=str(final)), other)
    # a model without a stored template (e.g. a hub model) falls back to the configured one
    assert evaluation_template(EvalConfig(model=str(tmp_path / "hub-model")), jsonl) == SHORT_TEMPLATE


@pytest.fixture(scope="module")
def paper_data(tmp_path_factory):
    """REXRAG_DATA for the paper configs: searchr1/train.parquet from prepare-data, flashrag/<bench>/<split>.jsonl."""
    root = tmp_path_factory.mktemp("rexrag_data")
    flashrag = write_flashrag(root / "flashrag")
    prepare_data(flashrag, root / "searchr1", OFFICIAL_SHAPE_TEMPLATE, test_sources=())
    return root


@pytest.mark.parametrize("path", PAPER_TRAIN, ids=lambda p: p.name)
def test_paper_configs_evaluate_with_their_training_template(path, paper_data, monkeypatch, tok, tmp_path):
    monkeypatch.setenv("REXRAG_DATA", str(paper_data))
    cfg = load_config(RexRagTrainConfig, path)
    train, evaluation, _ = load_questions(cfg.qa)
    assert len(train) == 6 and len(evaluation) == 7 * 3
    template = resolve_template(cfg.qa, train, evaluation)
    assert template == OFFICIAL_SHAPE_TEMPLATE

    def user_turn(question: str) -> list[int]:
        return encode_chat_prompt(
            tok, [{"role": "user", "content": render_prompt(question, OFFICIAL_SHAPE_TEMPLATE)}]
        )

    # what the trainer encodes for a training question ...
    record = to_records(train[:1], template)[0]
    trained = encode_record_prompt(
        tok, record, use_chat_template=cfg.data.use_chat_template, system_prompt=cfg.data.system_prompt
    )
    assert trained == user_turn(train[0].question)
    # ... and what the final evaluation / held-out curve feed the policy for a test question: the same template
    evaluated, _, _ = rollout_inputs(evaluation[:1], tok, template, cfg.data.use_chat_template)
    assert evaluated[0] == user_turn(evaluation[0].question)
    # evaluating the run's final model later with the paper eval config uses the same template
    write_template(template, tmp_path / "run" / "final")
    eval_cfg = load_config(
        EvalConfig, PAPER / "eval_qwen2.5-3b.yaml", [f"model={tmp_path / 'run' / 'final'}"]
    )
    _, eval_examples, _ = load_questions(eval_cfg.qa)
    assert evaluation_template(eval_cfg, eval_examples) == template
    assert eval_cfg.use_chat_template == cfg.data.use_chat_template
