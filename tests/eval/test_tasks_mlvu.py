import json

import pytest

from tinyvr.errors import ConfigError, DataError
from tinyvr.eval.tasks import get_task

task = get_task("mlvu")
SUBSET = ["plotQA", "count"]


def test_items(mlvu_root):
    items = task.load(mlvu_root, tasks=SUBSET)
    assert [it.id for it in items] == ["1_plotQA/0", "1_plotQA/1", "4_count/0"]
    assert [it.category for it in items] == [{"task": "plotQA"}] * 2 + [{"task": "count"}]
    assert items[0].video == mlvu_root / "video" / "1_plotQA" / "movie101_66.mp4"
    assert all(it.video.is_file() and it.video_kind == "video" and it.bound is None for it in items)
    assert [it.answer for it in items] == ["A", "D", "C"]
    assert items[2].letters == ("A", "B", "C", "D") and items[2].options == ("1", "2", "3", "4")
    # json stems are accepted too, and the order is always the benchmark's
    assert [it.id for it in task.load(mlvu_root, tasks=["4_count", "1_plotQA"], per_task_limit=1)] == [
        "1_plotQA/0", "4_count/0"]


def test_prompt_snapshots(mlvu_root):
    it = task.load(mlvu_root, tasks=SUBSET, limit=1)[0]
    question = ("What color is the main male character in the video?\n"
                "(A) Yellow\n(B) Red\n(C) Green\n(D) Blue")
    assert it.question == question
    assert task.prompt(it, "reason") == (
        f"<image>\n{question}\nOutput the thinking process in <think> </think> and final answer "
        "(option) in <answer> </answer> tags.")
    assert task.prompt(it, "option") == (
        f"<image>\n{question}\nAnswer with the option's letter from the given choices directly.")


def test_missing_task_file(mlvu_root):
    with pytest.raises(DataError) as e:
        task.load(mlvu_root)
    assert e.value.path.endswith("json/2_needle.json") and "[mlvu]" in str(e.value)
    with pytest.raises(ConfigError, match="valid"):
        task.load(mlvu_root, tasks=["plotqa"])


@pytest.mark.parametrize("change, field", [
    ({"candidates": "Yellow"}, "candidates"),
    ({"answer": "Purple"}, "answer"),
    ({"question": ""}, "question"),
])
def test_bad_rows(mlvu_root, change, field):
    path = mlvu_root / "json" / "1_plotQA.json"
    rows = json.loads(path.read_text())
    rows[1].update(change)
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError) as e:
        task.load(mlvu_root, tasks=SUBSET)
    assert (e.value.path, e.value.line, e.value.field) == (str(path), 1, field)


def test_aggregate_is_macro():
    records = ([{"correct": True, "category": {"task": "plotQA"}}] * 3
               + [{"correct": False, "category": {"task": "plotQA"}}]
               + [{"correct": False, "category": {"task": "count"}}])
    scores = task.aggregate(records)
    assert list(scores) == ["plotQA", "count", "Avg", "micro"]
    assert scores["plotQA"] == 0.75 and scores["count"] == 0.0
    assert scores["Avg"] == pytest.approx(0.375)  # M-Avg: (0.75 + 0) / 2, not 3/5
    assert scores["micro"] == pytest.approx(0.6)
