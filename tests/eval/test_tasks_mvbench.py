import json

import pytest

from tinyvr.errors import ConfigError, DataError
from tinyvr.eval.tasks import get_task
from tinyvr.eval.tasks.mvbench import TASKS

task = get_task("mvbench")
MVBENCH_SUBSET = ["Action Sequence", "Action Antonym", "Fine-grained Pose", "Episodic Reasoning"]


def _rewrite(root, fname, edit):
    path = root / "json" / fname
    rows = json.loads(path.read_text())
    edit(rows)
    path.write_text(json.dumps(rows))
    return path


def test_twenty_tasks_with_reference_layout():
    assert len(TASKS) == 20
    assert TASKS["Episodic Reasoning"].folder == "tvqa/frames_fps3_hq"
    assert TASKS["Episodic Reasoning"].reader == "frame"
    assert [n for n, t in TASKS.items() if t.bound] == [
        "Action Sequence", "Action Prediction", "Object Interaction", "Action Localization",
        "Episodic Reasoning"]
    assert {t.reader for t in TASKS.values()} == {"video", "avi", "webm", "frame"}


def test_items(mvbench_root):
    items = task.load(mvbench_root, tasks=MVBENCH_SUBSET)
    # official task order, then file order
    assert [it.id for it in items] == ["action_sequence/0", "action_sequence/1", "action_antonym/0",
                                       "fine_grained_pose/0", "episodic_reasoning/0"]
    assert [it.category["task"] for it in items] == ["Action Sequence", "Action Sequence",
                                                     "Action Antonym", "Fine-grained Pose",
                                                     "Episodic Reasoning"]
    seq, seq1, ant, pose, epi = items
    assert seq.video == mvbench_root / "video/star/Charades_v1_480/AB12C.mp4" and seq.video.is_file()
    assert (seq.video_kind, seq.sampling, seq.bound, seq.fps) == ("video", "linspace", (2.5, 9.0), None)
    assert seq.letters == ("A", "B", "C", "D") and seq.answer == "B"
    assert seq1.bound == (0.0, 4.0) and seq1.answer == "A"
    assert ant.video.suffix == ".webm" and ant.video.is_file()
    assert (ant.sampling, ant.bound, ant.letters, ant.answer) == ("segment_middle", None, ("A", "B", "C"), "C")
    assert pose.video == mvbench_root / "video/nturgbd/S001C001P001R001A001_rgb.avi"
    assert (pose.sampling, pose.answer) == ("segment_middle", "D")
    assert epi.video_kind == "frames" and epi.video.is_dir()
    assert epi.video == mvbench_root / "video/tvqa/frames_fps3_hq/castle_s01e01_seg02_clip_00"
    assert (epi.fps, epi.bound, epi.sampling) == (3.0, (1.0, 3.5), "segment_middle")
    assert epi.letters == tuple("ABCDE") and epi.answer == "B"
    assert [p.name for p in items.files] == ["action_sequence.json", "action_antonym.json",
                                             "fine_grained_pose.json", "episodic_reasoning.json"]


def test_prompt_snapshots(mvbench_root):
    seq = task.load(mvbench_root, tasks=["action_sequence"], limit=1)[0]
    assert task.prompt(seq, "reason") == (
        "<image>\nWhat did the person do first?\nOptions:\n"
        "A. Opened the door.\nB. Sat on the bed.\nC. Took the cup.\nD. Threw the towel.\n"
        "Output the thinking process in <think> </think> and final answer (option) in "
        "<answer> </answer> tags.")
    assert task.prompt(seq, "option") == (
        "<image>\nWhat did the person do first?\n"
        "(A) Opened the door.\n(B) Sat on the bed.\n(C) Took the cup.\n(D) Threw the towel.\n"
        "Answer with the option's letter from the given choices directly.")
    assert seq.question == task.prompt(seq, "reason")[len("<image>\n"):].rsplit("\n", 1)[0]
    with pytest.raises(ConfigError, match="option"):
        task.prompt(seq, "cot")


def test_options_are_right_stripped(mvbench_root):
    _rewrite(mvbench_root, "action_antonym.json",
             lambda rows: rows[0].update(candidates=["left ", "right", "Not sure  "], answer="left "))
    it = task.load(mvbench_root, tasks=["Action Antonym"])[0]
    assert task.prompt(it, "reason").endswith("C. Not sure\nOutput the thinking process in <think> "
                                              "</think> and final answer (option) in <answer> </answer> tags.")
    assert "A. left \nB. right" in it.question  # only the end of the block is stripped
    assert it.answer == "A"


def test_all_tasks_required_unless_subset(mvbench_root):
    with pytest.raises(DataError) as e:
        task.load(mvbench_root)
    assert "[mvbench]" in str(e.value) and e.value.path.endswith("json/action_prediction.json")
    assert "tasks=" in str(e.value)


def test_limits(mvbench_root):
    assert [it.id for it in task.load(mvbench_root, tasks=MVBENCH_SUBSET, limit=2)] == [
        "action_sequence/0", "action_sequence/1"]
    per = task.load(mvbench_root, tasks=MVBENCH_SUBSET, per_task_limit=1)
    assert [it.id for it in per] == ["action_sequence/0", "action_antonym/0", "fine_grained_pose/0",
                                     "episodic_reasoning/0"]
    with pytest.raises(ConfigError, match="limit"):
        task.load(mvbench_root, tasks=MVBENCH_SUBSET, limit=0)
    with pytest.raises(ConfigError, match="valid"):
        task.load(mvbench_root, tasks=["Action Sequenze"])
    with pytest.raises(ConfigError, match=r"unknown load option\(s\) \['durations'\]"):
        task.load(mvbench_root, durations=["short"])


def test_missing_field_names_file_row_field(mvbench_root):
    _rewrite(mvbench_root, "action_sequence.json", lambda rows: rows[1].pop("candidates"))
    with pytest.raises(DataError) as e:
        task.load(mvbench_root, tasks=MVBENCH_SUBSET)
    err = e.value
    assert err.path.endswith("action_sequence.json") and err.line == 1 and err.field == "candidates"
    assert str(err).startswith(err.path + ":1: field 'candidates': [mvbench]")


def test_bound_task_requires_start_end(mvbench_root):
    _rewrite(mvbench_root, "episodic_reasoning.json", lambda rows: rows[0].pop("end"))
    with pytest.raises(DataError) as e:
        task.load(mvbench_root, tasks=["Episodic Reasoning"])
    assert (e.value.line, e.value.field) == (0, "end")


def test_unmatched_answer(mvbench_root):
    _rewrite(mvbench_root, "fine_grained_pose.json", lambda rows: rows[0].update(answer="pick up "))
    with pytest.raises(DataError) as e:
        task.load(mvbench_root, tasks=["Fine-grained Pose"])
    assert (e.value.line, e.value.field) == (0, "answer") and "pick up " in str(e.value)
    # strict=False keeps the reference's behaviour: GT '@', which no prediction can match
    assert task.load(mvbench_root, tasks=["Fine-grained Pose"], strict=False)[0].answer == "@"


def test_missing_video(mvbench_root):
    (mvbench_root / "video/ssv2_video/1234.webm").unlink()
    with pytest.raises(DataError) as e:
        task.load(mvbench_root, tasks=["Action Antonym"])
    assert (e.value.line, e.value.field) == (0, "video") and "1234.webm" in str(e.value)
    assert len(task.load(mvbench_root, tasks=["Action Antonym"], check_videos=False)) == 1


def test_aggregate_is_micro():
    def recs(name, outcomes):
        return [{"id": f"{name}{i}", "correct": c, "category": {"task": name}} for i, c in enumerate(outcomes)]

    records = (recs("Episodic Reasoning", [1, 1, 1, 1]) + recs("Action Sequence", [1, 0])
               + recs("Fine-grained Pose", [0]) + recs("Action Antonym", [1]))
    scores = task.aggregate(records)
    # per-task in official order, then the micro average (6/8), not the macro (0.625)
    assert list(scores) == ["Action Sequence", "Action Antonym", "Fine-grained Pose",
                            "Episodic Reasoning", "Avg"]
    assert scores == {"Action Sequence": 0.5, "Action Antonym": 1.0, "Fine-grained Pose": 0.0,
                      "Episodic Reasoning": 1.0, "Avg": 0.75}
