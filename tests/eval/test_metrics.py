import hashlib
import json
import re

import pytest

import tinyvr
from tinyvr.eval import metrics

RECORDS = [
    {"id": "a", "gt": "A", "pred": "A", "correct": True, "category": {"task": "x"}},
    {"id": "b", "gt": "B", "pred": None, "correct": False, "category": {"task": "y"}},  # unparseable
    {"id": "c", "gt": "C", "pred": "C", "correct": True, "guessed": True, "category": {"task": "x"}},
    {"id": "d", "gt": "D", "pred": None, "correct": False, "error": "VideoDecodeError: bad file",
     "category": {"task": "y"}},
    {"id": "e", "gt": "A", "pred": "B", "correct": False, "guessed": True, "category": {"task": "x"}},
]


def test_accuracy_keeps_every_record_in_the_denominator():
    assert metrics.accuracy(RECORDS) == pytest.approx(2 / 5)
    assert metrics.grouped_accuracy(RECORDS, "task") == {"x": pytest.approx(2 / 3), "y": 0.0}
    assert list(metrics.grouped_accuracy(RECORDS[::-1], "task")) == ["x", "y"]  # first appearance
    assert metrics.grouped_counts(RECORDS, "task") == {"x": (2, 3), "y": (0, 2)}
    with pytest.raises(ValueError):
        metrics.accuracy([])


def test_category_lookup_and_correct_fallback():
    # category keys may also sit at the top level; 'correct' may be left for pred == gt
    recs = [{"pred": "A", "gt": "A", "family": "f"}, {"pred": None, "gt": None, "family": "f"}]
    assert metrics.grouped_accuracy(recs, "family") == {"f": 0.5}
    with pytest.raises(KeyError, match="duration"):
        metrics.grouped_accuracy(recs, "duration")
    assert metrics.macro_average({"a": 1.0, "b": 0.0, "c": 0.5}) == 0.5


def test_results_card(tmp_path):
    ann = tmp_path / "validation.json"
    ann.write_text('[{"q": 1}]')
    card = metrics.results_card(model=tmp_path / "ckpt", task="mmvu", mode="reason", num_frames=16,
                                decoding={"do_sample": False, "max_new_tokens": 1024}, seed=0,
                                data_files=[ann], frame_sampling="linspace",
                                extra={"stage": "grpo"})
    assert card["data"] == {str(ann): hashlib.sha256(b'[{"q": 1}]').hexdigest()}
    assert card["code"]["tinyvr"] == tinyvr.__version__
    commit = card["code"]["git_commit"]
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit)
    assert (card["model"], card["mode"], card["num_frames"], card["seed"], card["stage"]) == (
        str(tmp_path / "ckpt"), "reason", 16, 0, "grpo")
    json.dumps(card)  # JSON-serialisable as is


def test_write_results(tmp_path):
    card = {"model": "/ckpts/tinyvr-grpo", "task": "mvbench", "mode": "reason"}
    scores = {"x": 2 / 3, "y": 0.0, "Avg": 0.4}
    path = metrics.write_results(tmp_path / "eval", scores, card, RECORDS, skipped=3,
                                 reasoning={"mean_think_length": 120.0})
    data = json.loads(path.read_text())
    assert (data["task"], data["mode"], data["label"]) == ("mvbench", "reason", "tinyvr-grpo")
    assert data["scores"] == scores and data["card"] == card
    assert data["counts"] == {"total": 5, "correct": 2, "unparseable": 1, "guessed": 2, "skipped": 3,
                              "errors": 1}
    assert data["answers"] == {"A": 1, "B": 1, "C": 1}  # parsed answers only: no None, no errored item
    assert metrics.top_answer(data["answers"]) == ("C", 1 / 3)  # a tie goes to the later letter
    assert metrics.top_answer({"A": 1, "D": 3}) == ("D", 0.75) and metrics.top_answer({}) is None
    assert data["reasoning"] == {"mean_think_length": 120.0}
    lines = (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == RECORDS
    with pytest.raises(ValueError, match="task and mode"):
        metrics.write_results(tmp_path, scores, {"model": "m"}, RECORDS)
