"""Malformed dataset rows: each is a bad row (DataError naming file, line and field) while the
good rows around it load; whole-file problems raise at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinyvr.data.datasets import load_conversation_json, load_grpo_jsonl
from tinyvr.errors import DataError

OPTS = "Which shape moves left?\nOptions:\nA. circle\nB. square\nC. star\nD. heart"


def grpo(problem=OPTS, solution="<answer>B</answer>", video="./videos/x.mp4", **extra) -> str:
    return json.dumps({"problem": problem, "solution": solution, "video_filename": video, **extra})


def write_lines(path: Path, lines) -> Path:
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return path


ROWS = [  # (id, bad line, field the error names, words in the reason)
    ("missing_problem", json.dumps({"solution": "<answer>A</answer>", "video_filename": "a.mp4"}), "problem", "missing"),
    ("missing_video", json.dumps({"problem": OPTS, "solution": "<answer>A</answer>"}), "video_filename", "missing"),
    ("solution_not_string", grpo(solution=["A"]), "solution", "must be a string"),
    ("video_is_number", grpo(video=17), "video_filename", "must be a string"),
    ("empty_problem", grpo(problem="  "), "problem", "empty"),
    ("unknown_letter_in_problem_options", grpo(solution="<answer>Z</answer>"), "solution", "'Z' is not one of"),
    ("unknown_letter_in_options_column", grpo(problem="Which?", solution="<answer>E</answer>",
                                              options=["a", "b", "c", "d"]), "solution", "'E' is not one of"),
    ("empty_options_column", grpo(options=[]), "options", "empty"),
    ("options_wrong_type", grpo(options="A. a B. b"), "options", "must be a list"),
    ("empty_options_in_problem", grpo(problem="Which shape moves?\nOptions:\n"), "problem", "no options"),
    ("answer_column_disagrees", grpo(answer="C"), "answer", "disagrees"),
    ("path_escape", grpo(video="../../etc/passwd"), "video_filename", "escapes video_root"),
    ("absolute_path", grpo(video="/etc/passwd"), "video_filename", "absolute path"),
    ("nul_in_path", grpo(video="a\u0000.mp4"), "video_filename", "NUL"),
    ("malformed_json", '{"problem": "Which?", "solution": ', None, "malformed JSON"),
    ("not_an_object", '["problem", "solution"]', None, "JSON object"),
    ("invalid_utf8", b'{"problem": "caf\xe9 ?", "solution": "<answer>A</answer>"}', None, "invalid UTF-8"),
    ("deep_nesting", "[" * 200_000 + "]" * 200_000, None, "malformed JSON"),
    ("huge_integer", '{"problem": ' + "9" * 5000 + "}", None, "malformed JSON"),
]


@pytest.mark.parametrize("line,field,reason", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_grpo_row_is_named_and_skipped(tmp_path, line, field, reason):
    f = write_lines(tmp_path / "train.jsonl", [grpo(), line, grpo(solution="<answer>D</answer>")])
    rows, bad = load_grpo_jsonl(f, tmp_path)
    assert [r.index for r in rows] == [0, 2]  # the good rows on both sides survive
    assert len(bad) == 1
    err = bad[0]
    assert isinstance(err, DataError) and err.line == 2 and err.field == field
    assert f"{f}:2:" in str(err) and reason in str(err), str(err)
    if field:
        assert f"field '{field}'" in str(err)


def test_very_long_line_is_skipped_without_parsing(tmp_path):
    """A 3 MiB line (past the 1 MiB cap) is drained in chunks, reported, and the next line is read."""
    long_line = grpo(problem=OPTS + " " + "x" * (3 << 20))
    f = write_lines(tmp_path / "train.jsonl", [grpo(), long_line, grpo()])
    rows, bad = load_grpo_jsonl(f, tmp_path)
    assert [r.index for r in rows] == [0, 2]
    assert len(bad) == 1 and bad[0].line == 2 and "longer than" in str(bad[0])


def test_answers_that_fit_their_options_load(tmp_path):
    """The letter checks only judge what they can know: free-form answers and option layouts that
    are not "X. text" lines are left alone."""
    lines = [
        grpo(solution="<answer>D</answer>"),
        grpo(problem="Which?\nOptions:\n(A) red\n(B) blue", solution="<answer>(B)</answer>"),
        grpo(problem="What colour is it?", solution="<answer>blue</answer>"),  # free-form
        grpo(problem="Which? Options: red or blue", solution="<answer>Q</answer>"),  # not "X. text" lines
        grpo(problem="Which?", solution="<answer>B</answer>", options={"A": "red", "B": "blue"}),
        grpo(solution="<answer>B</answer>", answer="B"),
    ]
    rows, bad = load_grpo_jsonl(write_lines(tmp_path / "d.jsonl", lines), tmp_path)
    assert bad == [] and len(rows) == len(lines)


def test_dataset_path_escape_is_allowed_only_by_config(tmp_path):
    f = write_lines(tmp_path / "d.jsonl", [grpo(video="../shared/clip.mp4"), grpo(video="/data/clip.mp4")])
    root = tmp_path / "root"
    rows, bad = load_grpo_jsonl(f, root)
    assert rows == [] and [e.field for e in bad] == ["video_filename", "video_filename"]
    rows, bad = load_grpo_jsonl(f, root, allow_outside_root=True)
    assert bad == [] and [str(r.video_path) for r in rows] == [str(tmp_path / "shared/clip.mp4"), "/data/clip.mp4"]


def test_whole_file_faults_raise_naming_the_file(tmp_path):
    with pytest.raises(DataError, match="not found") as e:
        load_grpo_jsonl(tmp_path / "nope.jsonl", tmp_path)
    assert "nope.jsonl" in str(e.value)
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="no rows"):
        load_grpo_jsonl(empty, tmp_path)
    with pytest.raises(DataError, match="not a file"):
        load_grpo_jsonl(tmp_path, tmp_path)


def test_binary_file_given_as_jsonl_gives_only_bad_rows(tmp_path, fault_videos):
    rows, bad = load_grpo_jsonl(fault_videos["ok_mp4"], tmp_path)
    assert rows == [] and bad and all(isinstance(e, DataError) and e.line for e in bad)


# -- LLaVA conversation json (pretrain / SFT / cold start) -------------------------------------------


def sample(human=f"<image>\n{OPTS}\nAnswer with the option's letter.", gpt="B", video="videos/x.mp4"):
    return {"video": video, "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]}


ITEMS = [
    ("unknown_letter", sample(gpt="Z"), "[1].conversations", "'Z' is not one of"),
    ("unknown_letter_in_tag", sample(gpt="<think>hmm</think> <answer>F</answer>"), "[1].conversations", "'F'"),
    ("empty_options", sample(human="<image>\nWhich moves?\nOptions:"), "[1].conversations", "no options"),
    ("missing_video", {"conversations": sample()["conversations"]}, "[1].video", "missing"),
    ("video_wrong_type", sample(video=["a.mp4"]), "[1].video", "must be a string"),
    ("conversations_wrong_type", {"video": "a.mp4", "conversations": {"from": "human"}}, "[1].conversations",
     "non-empty list"),
    ("path_escape", sample(video="../../etc/passwd"), "[1].video", "escapes video_root"),
]


@pytest.mark.parametrize("item,field,reason", [i[1:] for i in ITEMS], ids=[i[0] for i in ITEMS])
def test_bad_conversation_item_is_named_and_skipped(tmp_path, item, field, reason):
    f = tmp_path / "sft.json"
    f.write_text(json.dumps([sample(), item, sample(gpt="C")]))
    rows, bad = load_conversation_json(f, tmp_path)
    assert [r.index for r in rows] == [0, 2] and len(bad) == 1
    assert bad[0].field == field and reason in str(bad[0]) and str(f) in str(bad[0])


def test_conversation_file_faults(tmp_path):
    f = tmp_path / "sft.json"
    f.write_bytes(b'[{"video": "caf\xe9.mp4"}]')
    with pytest.raises(DataError, match="invalid UTF-8"):
        load_conversation_json(f, tmp_path)
    f.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(DataError, match="malformed JSON"):
        load_conversation_json(f, tmp_path)


def test_dataset_text_is_data_never_code(tmp_path):
    """Row content is parsed as JSON and kept as strings: nothing in it is evaluated."""
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    f = write_lines(tmp_path / "d.jsonl", [grpo(problem=payload, solution=payload, video="./videos/x.mp4",
                                                 reward_hint=payload)])
    rows, bad = load_grpo_jsonl(f, tmp_path)
    assert bad == [] and rows[0].problem == payload and rows[0].columns["reward_hint"] == payload
    assert not marker.exists()
