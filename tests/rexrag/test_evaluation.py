"""Scoring predictions per data source, the paper-layout tables and the `eval` CLI contract."""

import json
import math

import pytest

from rexrag.__main__ import main
from rexrag.evaluation import (
    PredictionFormatError,
    answer_from_prediction,
    format_csv,
    format_markdown,
    mean_std,
    read_predictions,
    score_records,
)


@pytest.mark.parametrize(
    "prediction, expected",
    [
        ("Paris", "Paris"),  # bare answer is used as is
        ("  Paris \n", "Paris"),  # ... stripped
        ("<think> hm </think>\n<answer> Lyon </answer>", "Lyon"),  # full response: the answer block
        ("<answer> Lyon </answer> then <answer> Paris </answer>", "Paris"),  # the LAST complete block
        ("<think> x </think><answer> unfinished", None),  # tags but no complete block -> no answer
        (None, None),
    ],
)
def test_answer_from_prediction(prediction, expected):
    assert answer_from_prediction(prediction) == expected


RECORDS = [
    # nq: 1 right (normalisation: "the" and case), 1 wrong -> EM 0.5
    {
        "data_source": "nq",
        "golden_answers": ["Paris"],
        "prediction": "<answer> the paris </answer>",
        "num_searches": 1,
        "num_turns": 2,
    },
    {
        "data_source": "nq",
        "golden_answers": ["Rome"],
        "prediction": "<answer> Milan </answer>",
        "num_searches": 3,
        "num_turns": 4,
    },
    # hotpotqa: partial overlap -> EM 0, F1: pred "new york city" vs gold "new york": P 2/3, R 1 -> 0.8
    {"data_source": "hotpotqa", "golden_answers": ["New York"], "prediction": "New York City"},
]


def test_score_records_by_hand():
    result = score_records(RECORDS)
    nq, hotpot = result["by_source"]["nq"], result["by_source"]["hotpotqa"]
    assert (nq["em"], nq["n"], hotpot["em"], hotpot["n"]) == (0.5, 2, 0.0, 1)
    # nq F1: 1.0 and 0.0 -> 0.5 ; hotpot F1 = 2 * (2/3) * 1 / (2/3 + 1) = 0.8
    assert nq["f1"] == pytest.approx(0.5) and hotpot["f1"] == pytest.approx(0.8)
    # unweighted over sources (the paper's Avg.): (0.5 + 0.0) / 2, not 1/3 over records
    assert result["average_em"] == pytest.approx(0.25)
    assert result["average_f1"] == pytest.approx(0.65)
    assert nq["searches"] == pytest.approx(2.0) and nq["turns"] == pytest.approx(3.0)
    assert "searches" not in hotpot
    assert list(result["by_source"]) == ["nq", "hotpotqa"]  # paper column order
    assert math.isnan(score_records([])["average_em"])


def test_tables_in_paper_layout():
    results = {"GRPO": score_records(RECORDS), "REX-RAG": score_records(RECORDS[:1])}
    markdown = format_markdown(results)
    assert markdown.splitlines()[0] == "| Method | NQ | HotpotQA | Avg. |"
    assert "| GRPO | 50.0 | 0.0 | 25.0 |" in markdown
    assert "| REX-RAG | 100.0 | - | 100.0 |" in markdown
    assert format_csv(results).splitlines()[1] == "GRPO,50.0,0.0,25.0"


def test_eval_cli_writes_the_contract_layout(tmp_path, capsys):
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    out = tmp_path / "out" / "eval.json"
    assert main(["eval", "--predictions", str(predictions), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["average_em"] == pytest.approx(0.25)
    assert set(result["by_source"]["nq"]) >= {"em", "f1", "n"}
    assert "| predictions | 50.0 | 0.0 | 25.0 |" in capsys.readouterr().out
    assert main(["table", f"A={out}", "--out-dir", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "table.csv").read_text().startswith("Method,NQ,HotpotQA,Avg.")


def test_bad_predictions_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"data_source": "nq", "prediction": "x"}) + "\n")
    with pytest.raises(PredictionFormatError, match=r"p.jsonl:1: missing field 'golden_answers'"):
        read_predictions(path)
    assert main(["eval", "--predictions", str(path), "--out", str(tmp_path / "o.json")]) == 2


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))  # sample std: sqrt((1 + 0 + 1) / 2)
    assert mean_std([4.0]) == (4.0, 0.0)
