"""experiments/rexrag-cpu-mechanism/copy_probe.py: the subject-copy rate and the copyable-token loss, on a real
small world with a real tokenizer, against an oracle model (copies everything), a model that never copies, and a
uniform model (NLL ln V everywhere)."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
from config_harness import load_script

from rexrag.data.qa import load_flashrag_jsonl
from rexrag.recipes.common import SHORT_TEMPLATE, WorldDataConfig, ensure_world, world_tokenizer_texts
from rlcore.models import train_bpe_tokenizer


def _module():
    return load_script("rexrag-cpu-mechanism", "copy_probe.py", "copy_probe")


probe = _module()


@pytest.fixture(scope="module")
def world(tmp_path_factory, small_world):
    paths = ensure_world(WorldDataConfig(world=small_world, dir=str(tmp_path_factory.mktemp("w") / "world")))
    tokenizer = train_bpe_tokenizer(world_tokenizer_texts(paths, SHORT_TEMPLATE, ["Wait."]), 400)
    return paths, tokenizer


class _Writer:
    """A "model" whose greedy continuation of each prompt is ``write(question) + "."``."""

    def __init__(self, tokenizer, write):
        self.tokenizer, self.write = tokenizer, write

    def generate(self, input_ids, attention_mask, max_new_tokens, do_sample, pad_token_id):
        rows = []
        for row in input_ids:
            prompt = self.tokenizer.decode(row, skip_special_tokens=True)
            question = re.search(r"Question: (.*?\?)", prompt).group(1)
            rows.append(
                row.tolist() + self.tokenizer.encode(f" {self.write(question)}.", add_special_tokens=False)
            )
        width = max(map(len, rows))
        return torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows])


def test_subject_copy_counts_exact_copies_only(world):
    paths, tokenizer = world
    questions = load_flashrag_jsonl(paths["dev"]) + load_flashrag_jsonl(paths["test"])
    subjects = {q.question: q.metadata["chain"][0] for q in questions}
    oracle = probe.subject_copy(
        _Writer(tokenizer, subjects.get), tokenizer, SHORT_TEMPLATE, questions, batch=4
    )
    assert oracle["questions"] == 10 and oracle["exact"] == 10 and oracle["rate"] == 1.0
    assert oracle["samples"][0]["written"] == oracle["samples"][0]["subject"]
    # a near-copy (the first name only) is not a copy
    first = probe.subject_copy(
        _Writer(tokenizer, lambda q: subjects[q].split()[0]), tokenizer, SHORT_TEMPLATE, questions
    )
    several_words = sum(len(s.split()) > 1 for s in subjects.values())
    assert first["exact"] == 10 - several_words and several_words > 0


class _Logits:
    def __init__(self, vocab, oracle):
        self.vocab, self.oracle = vocab, oracle

    def __call__(self, ids):
        logits = torch.zeros(ids.shape[1], self.vocab)
        if self.oracle:  # all mass on the token that comes next
            logits[torch.arange(ids.shape[1] - 1), ids[0, 1:]] = 50.0
        return SimpleNamespace(logits=logits[None])


@pytest.mark.parametrize("fresh", [False, True])
def test_copy_loss_splits_trained_tokens_and_scores_them(world, fresh):
    paths, tokenizer = world
    folder = paths["corpus"].parent
    vocab = len(tokenizer)
    uniform = probe.copy_loss(_Logits(vocab, False), tokenizer, folder, fresh, count=8, frequent_tokens=20)
    assert uniform["copy"]["tokens"] > 0 and uniform["other"]["tokens"] > uniform["copy"]["tokens"]
    for kind in ("copy", "other"):
        assert uniform[kind]["mean_nll"] == pytest.approx(math.log(vocab), rel=1e-4)
        assert uniform[kind]["share_below_0.1"] == 0.0
    oracle = probe.copy_loss(_Logits(vocab, True), tokenizer, folder, fresh, count=8, frequent_tokens=20)
    assert oracle["copy"]["mean_nll"] < 1e-6 and oracle["copy"]["share_below_0.1"] == 1.0
    assert oracle["copy"]["tokens"] == uniform["copy"]["tokens"]


def test_missing_model_or_world_is_one_clear_error(tmp_path, capsys, world):
    paths, _ = world
    with pytest.raises(SystemExit) as stop:
        probe.main(["--model", str(tmp_path / "nope"), "--world", str(paths["corpus"].parent)])
    assert stop.value.code == 2 and "no model folder (config.json)" in capsys.readouterr().err
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(SystemExit):
        probe.main(["--model", str(tmp_path / "m"), "--world", str(tmp_path)])
    assert (
        "not a world folder (missing train.jsonl, dev.jsonl, test.jsonl, world.json, index)"
        in capsys.readouterr().err
    )
