"""The knowledge probe: statement scoring equals a hand-summed forward pass, ranks/margins aggregate per
language, bad files fail with file:line:field, and a few training steps on the true statements raise the margin."""

from __future__ import annotations

import json

import pytest
import torch

from anessuite.knowledge_probe import (
    FactStatement,
    load_statements,
    main,
    probe_statements,
    score_texts,
    summarize,
)
from anessuite.mcq import SchemaError

ORGANS_EN = ["the liver", "the kidneys", "the lungs", "plasma esterases"]
ORGANS_ZH = ["肝脏", "肾脏", "肺", "血浆酯酶"]
DRUGS = [("Velozine", "维拉宁"), ("Koradrol", "卡米醇"), ("Nemivane", "诺西胺"), ("Talemide", "普托嗪")]


def _statements() -> list[FactStatement]:
    out = []
    for i, (en, zh) in enumerate(DRUGS):
        true = i % 4
        out.append(
            FactStatement(
                f"en{i}",
                "en",
                f"{en} is cleared by {{value}}.",
                ORGANS_EN[true],
                tuple(o for j, o in enumerate(ORGANS_EN) if j != true),
                "organ",
                "corpus",
            )
        )
        out.append(
            FactStatement(
                f"zh{i}",
                "zh",
                f"{zh}经{{value}}清除。",
                ORGANS_ZH[true],
                tuple(o for j, o in enumerate(ORGANS_ZH) if j != true),
                "organ",
                "corpus",
            )
        )
    return out


def _tiny_model(seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlcore.models import train_bpe_tokenizer

    texts = [text for st in _statements() for text in st.candidates()] * 4
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300)
    tokenizer.padding_side = "right"
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return Qwen2ForCausalLM(config), tokenizer


def test_score_equals_hand_summed_token_logprobs():
    model, tokenizer = _tiny_model()
    texts = [
        "Velozine is cleared by the kidneys.",
        "维拉宁经肝脏清除。",
        "Koradrol is cleared by plasma esterases.",
    ]
    batched = score_texts(model, tokenizer, texts, batch_size=3)  # padded batch of unequal lengths
    for text, got in zip(texts, batched):
        ids = [tokenizer.eos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        expected = 0.0
        for position in range(1, len(ids)):
            row = logits[position - 1]
            expected += float(row[ids[position]] - torch.logsumexp(row, dim=0))
        assert got == pytest.approx(expected, abs=1e-4)
    # padding never changes a score
    assert score_texts(model, tokenizer, texts, batch_size=1) == pytest.approx(batched, abs=1e-4)


def test_rank_margin_and_per_language_summary():
    from anessuite.knowledge_probe import StatementResult

    results = [
        StatementResult("a", "en", "organ", "corpus", -1.0, [-2.0, -3.0, -4.0]),  # rank 1, margin 2
        StatementResult(
            "b", "en", "organ", "corpus", -3.0, [-2.0, -3.0, -5.0]
        ),  # rank 3 (tie counts), margin 0.33
        StatementResult("c", "zh", "organ", "heldout", -5.0, [-1.0, -2.0, -3.0]),  # rank 4, margin -3
    ]
    summary = summarize(results)
    en = summary["by_language"]["en"]
    assert en["n"] == 2 and en["accuracy"] == 0.5 and en["mean_rank"] == 2.0
    assert en["mean_margin"] == pytest.approx((2.0 + 1 / 3) / 2)
    assert en["chance"] == 0.25
    assert summary["by_language"]["zh"]["mean_rank"] == 4.0
    assert set(summary["by_phrasing"]) == {"en/corpus", "zh/heldout"}
    assert summary["all"]["accuracy"] == pytest.approx(1 / 3)


def test_training_on_true_statements_raises_the_margin():
    model, tokenizer = _tiny_model(seed=1)
    statements = _statements()
    before = summarize(probe_statements(model, tokenizer, statements))
    prefix = tokenizer.eos_token_id
    batch = [
        [prefix, *tokenizer(st.fill(st.true_value), add_special_tokens=False)["input_ids"]]
        for st in statements
    ]
    width = max(len(b) for b in batch)
    ids = torch.full((len(batch), width), tokenizer.pad_token_id)
    labels = torch.full((len(batch), width), -100)
    for row, seq in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, : len(seq)] = torch.tensor(seq)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(80):
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = summarize(probe_statements(model, tokenizer, statements))
    for lang in ("en", "zh"):
        assert after["by_language"][lang]["mean_margin"] > before["by_language"][lang]["mean_margin"] + 1.0
        assert after["by_language"][lang]["accuracy"] >= 0.75
    assert before["all"]["accuracy"] < 1.0  # an untrained model does not already know the facts


def _write(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def test_bad_statement_files_name_file_line_and_field(tmp_path):
    good = {"id": "x", "language": "en", "template": "A is {value}.", "true_value": "b", "distractors": ["c"]}
    path = tmp_path / "facts.jsonl"
    _write(path, [good, {**good, "template": "no slot"}])
    with pytest.raises(SchemaError, match=r"facts\.jsonl:2: field 'template'"):
        load_statements(path)
    _write(path, [{k: v for k, v in good.items() if k != "distractors"}])
    with pytest.raises(SchemaError, match=r"facts\.jsonl:1: missing field 'distractors'"):
        load_statements(path)
    _write(path, [{**good, "distractors": ["b"]}])
    with pytest.raises(SchemaError, match="contains the true value"):
        load_statements(path)
    path.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(SchemaError, match=r"facts\.jsonl:1: not valid JSON"):
        load_statements(path)


def test_cli_writes_probe_json(tmp_path, capsys):
    model, tokenizer = _tiny_model()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    records = [
        {
            "id": st.id,
            "language": st.language,
            "template": st.template,
            "true_value": st.true_value,
            "distractors": list(st.distractors),
            "attribute": st.attribute,
            "phrasing": st.phrasing,
        }
        for st in _statements()
    ]
    _write(tmp_path / "facts.jsonl", records)
    assert (
        main(
            [
                "--model",
                str(tmp_path / "model"),
                "--statements",
                str(tmp_path / "facts.jsonl"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "out" / "probe.json").read_text(encoding="utf-8"))
    assert report["summary"]["by_language"]["zh"]["n"] == 4
    assert len(report["per_statement"]) == 8 and "margin" in report["per_statement"][0]
    assert "en/corpus" in capsys.readouterr().out
