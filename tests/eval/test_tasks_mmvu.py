import json

import pytest

from tinyvr.errors import DataError
from tinyvr.eval.tasks import get_task

task = get_task("mmvu")


def _edit(root, i, **changes):
    path = root / "validation.json"
    rows = json.loads(path.read_text())
    rows[i].update(changes)
    path.write_text(json.dumps(rows))
    return path


def test_items_skip_open_ended(mmvu_root):
    items = task.load(mmvu_root)
    assert [it.id for it in items] == ["b2a3c1", "c9d8e7"]
    assert items.skipped == {"open-ended": 1} and items.num_skipped == 1
    # the URL prefix is replaced by the data root
    assert items[0].video == mmvu_root / "videos" / "Physics" / "12.mp4" and items[0].video.is_file()
    assert items[0].letters == tuple("ABCDE") and items[0].answer == "A"
    assert items[0].category == {"question_type": "multiple-choice", "subject": "Physics",
                                 "discipline": "Science"}
    assert items[1].options == ("Skin", "Muscle", "Bone", "Tendon")


def test_prompt_snapshots(mmvu_root):
    it = task.load(mmvu_root, limit=1)[0]
    body = ("Which law explains the motion of the cart?\nA. Newton's first law\nB. Hooke's law\n"
            "C. Ohm's law\nD. Snell's law\nE. Boyle's law")
    assert task.prompt(it, "reason") == (
        f"<image>\n{body}\nOutput the thinking process in <think> </think> and final answer (option) "
        "in <answer> </answer> tags.")
    assert task.prompt(it, "option") == (
        f"<image>\n{body}\nAnswer with the option's letter from the given choices directly.")


def test_relative_video_and_foreign_url(mmvu_root):
    _edit(mmvu_root, 0, video="videos/Physics/12.mp4")
    assert task.load(mmvu_root)[0].video == mmvu_root / "videos/Physics/12.mp4"
    path = _edit(mmvu_root, 2, video="https://example.com/v.mp4")
    with pytest.raises(DataError) as e:
        task.load(mmvu_root)
    assert (e.value.path, e.value.line, e.value.field) == (str(path), 2, "video")


@pytest.mark.parametrize("row, change, field", [
    (0, {"answer": "F"}, "answer"),
    (2, {"choices": ["Skin", "Bone"]}, "choices"),
    (1, {"question_type": "true-false"}, "question_type"),
    (2, {"question": None}, "question"),
])
def test_bad_rows(mmvu_root, row, change, field):
    path = _edit(mmvu_root, row, **change)
    with pytest.raises(DataError) as e:
        task.load(mmvu_root)
    assert (e.value.path, e.value.line, e.value.field) == (str(path), row, field)
    assert "[mmvu]" in str(e.value)


def test_missing_video_and_file(mmvu_root, tmp_path):
    (mmvu_root / "videos/Clinical_Medicine/5.mp4").unlink()
    with pytest.raises(DataError) as e:
        task.load(mmvu_root)
    assert (e.value.line, e.value.field) == (2, "video")
    with pytest.raises(DataError, match="file not found") as e:
        task.load(tmp_path)
    assert e.value.path.endswith("validation.json")


def test_aggregate():
    records = [{"correct": c} for c in (True, False, False, True, True)]
    assert task.aggregate(records) == {"multiple-choice": 0.6, "Avg": 0.6}
