import csv
import importlib.util
import json

import pytest

from tinyvr.errors import ConfigError, DataError
from tinyvr.eval.tasks import get_task

task = get_task("videomme")
HAS_PARQUET = importlib.util.find_spec("pyarrow") is not None or importlib.util.find_spec("pandas") is not None


def _table(root):
    return root / "videomme" / "test-00000-of-00001.jsonl"


def _edit_row(root, i, **changes):
    path = _table(root)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for k, v in changes.items():
        if v is None:
            rows[i].pop(k)
        else:
            rows[i][k] = v
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_items(videomme_root):
    items = task.load(videomme_root)
    assert [it.id for it in items] == ["001-1", "001-2", "002-1", "002-2", "003-1", "003-2"]
    assert [it.category["duration"] for it in items] == ["short"] * 2 + ["medium"] * 2 + ["long"] * 2
    first = items[0]
    assert first.video == videomme_root / "data" / "fFjv93ACGo8.mp4" and first.video.is_file()
    assert (first.video_kind, first.bound, first.sampling) == ("video", None, "linspace")
    assert first.letters == ("A", "B", "C", "D")
    assert first.options == ("One.", "Two.", "Three.", "Four.")
    assert [it.answer for it in items] == ["B", "C"] * 3
    assert first.category == {"duration": "short", "domain": "Knowledge",
                               "sub_category": "Humanity & History", "task_type": "Counting Problem"}
    assert items.files == [videomme_root / "videomme" / "test-00000-of-00001.jsonl"]


def test_duration_filter(videomme_root):
    items = task.load(videomme_root, durations=("long",))
    assert [it.id for it in items] == ["003-1", "003-2"]
    assert [it.id for it in task.load(videomme_root, durations="medium", limit=1)] == ["002-1"]
    with pytest.raises(ConfigError, match="durations"):
        task.load(videomme_root, durations=("short", "weird"))


def test_prompt_snapshots(videomme_root):
    it = task.load(videomme_root, limit=1)[0]
    assert task.prompt(it, "reason") == (
        "<image>\nHow many people appear in the short video?\nOptions:\n"
        "A. One.\nB. Two.\nC. Three.\nD. Four.\n"
        "Output the thinking process in <think> </think> and final answer (option) in "
        "<answer> </answer> tags.")
    # [TV] option mode lists the options without the "Options:" line
    assert task.prompt(it, "option") == (
        "<image>\nHow many people appear in the short video?\n"
        "A. One.\nB. Two.\nC. Three.\nD. Four.\n"
        "Answer with the option's letter from the given choices directly.")


def test_letter_is_text_before_first_dot(videomme_root):
    _edit_row(videomme_root, 0, options=["A. 1.5 m.", "B. 2.5 m.", "C. 3 m.", "D. 4 m."])
    it = task.load(videomme_root, limit=1)[0]
    assert it.letters == ("A", "B", "C", "D") and it.options[0] == "1.5 m."
    assert "A. 1.5 m.\nB. 2.5 m." in task.prompt(it, "option")  # raw option lines, untouched


@pytest.mark.parametrize("change, row, field", [
    ({"options": None}, 2, "options"),
    ({"options": ["A. x", "B y"]}, 3, "options"),
    ({"answer": "E"}, 1, "answer"),
    ({"duration": "tiny"}, 4, "duration"),
    ({"videoID": None}, 5, "videoID"),
])
def test_bad_rows_name_file_row_field(videomme_root, change, row, field):
    _edit_row(videomme_root, row, **change)
    with pytest.raises(DataError) as e:
        task.load(videomme_root)
    assert (e.value.line, e.value.field) == (row, field)
    assert "[videomme]" in str(e.value) and e.value.path.endswith("test-00000-of-00001.jsonl")


def test_missing_video_names_video_id(videomme_root):
    (videomme_root / "data" / "Mj1bbYm4CJA.mp4").unlink()
    with pytest.raises(DataError) as e:
        task.load(videomme_root)
    assert (e.value.line, e.value.field) == (2, "videoID") and "Mj1bbYm4CJA.mp4" in str(e.value)


def test_missing_table(tmp_path):
    with pytest.raises(DataError) as e:
        task.load(tmp_path)
    assert e.value.path.endswith("videomme/test-00000-of-00001.parquet")
    assert "test-00000-of-00001.jsonl" in str(e.value)


@pytest.mark.skipif(HAS_PARQUET, reason="a parquet reader is installed")
def test_parquet_without_reader(videomme_root):
    parquet = videomme_root / "videomme" / "test-00000-of-00001.parquet"
    parquet.write_bytes(b"PAR1")
    assert len(task.load(videomme_root)) == 6  # the jsonl copy beside it is used
    _table(videomme_root).unlink()
    with pytest.raises(DataError, match="pyarrow"):
        task.load(videomme_root)


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="needs pyarrow")
def test_parquet(videomme_root):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in _table(videomme_root).read_text().splitlines()]
    _table(videomme_root).unlink()
    pq.write_table(pa.Table.from_pylist(rows), videomme_root / "videomme" / "test-00000-of-00001.parquet")
    items = task.load(videomme_root)
    assert [it.answer for it in items] == ["B", "C"] * 3 and items.files[0].suffix == ".parquet"


def test_csv_fallback(videomme_root):
    rows = [json.loads(line) for line in _table(videomme_root).read_text().splitlines()]
    _table(videomme_root).unlink()
    with open(videomme_root / "videomme" / "test-00000-of-00001.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "options": json.dumps(r["options"])} for r in rows)
    items = task.load(videomme_root, durations=["short"])
    assert items[0].options == ("One.", "Two.", "Three.", "Four.") and items[1].answer == "C"


def test_aggregate_mean_of_durations():
    def recs(d, outcomes):
        return [{"correct": bool(c), "pred": "A" if c else None, "category": {"duration": d}} for c in outcomes]

    records = recs("long", [0]) + recs("short", [1, 1]) + recs("medium", [0, 0, 1, 1])
    scores = task.aggregate(records)
    assert list(scores) == ["short", "medium", "long", "Avg", "micro"]
    assert scores["short"] == 1.0 and scores["medium"] == 0.5 and scores["long"] == 0.0
    assert scores["Avg"] == pytest.approx(0.5)  # mean of the three durations
    assert scores["micro"] == pytest.approx(4 / 7)  # unparseable (pred None) items stay counted
    # one duration alone: Avg is that duration's accuracy
    assert task.aggregate(recs("medium", [0, 1]))["Avg"] == 0.5
