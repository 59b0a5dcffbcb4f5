"""tinyvr.data.datasets: the reference's GRPO jsonl and LLaVA json, validated row by row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinyvr.data.datasets import (BadSampleTracker, ConversationRow, GrpoRow, load_conversation_json,
                                  load_grpo_jsonl, resolve_video_path)
from tinyvr.errors import DataError


def grpo(problem="Which moves?\nOptions:\nA. red\nB. blue", solution="<answer>A</answer>",
         video="./NextQA/NExTVideo/1.mp4", **extra):
    return json.dumps({"problem": problem, "solution": solution, "video_filename": video, **extra})


def write_lines(path: Path, lines: list) -> Path:
    path.write_bytes(b"\n".join(l if isinstance(l, bytes) else l.encode() for l in lines) + b"\n")
    return path


# -- GRPO jsonl -----------------------------------------------------------------------------------


def test_good_rows(tmp_path):
    f = write_lines(tmp_path / "d.jsonl", [grpo(), "", grpo(video="NextQA/2.mp4", qid=7, kind="TC")])
    rows, bad = load_grpo_jsonl(f, tmp_path / "videos")
    assert bad == [] and len(rows) == 2 and all(isinstance(r, GrpoRow) for r in rows)
    root = (tmp_path / "videos").resolve()
    assert rows[0].video_path == root / "NextQA/NExTVideo/1.mp4"  # leading "./" dropped
    assert rows[0].problem.startswith("Which moves?") and rows[0].solution == "<answer>A</answer>"
    assert rows[1].index == 2 and rows[1].columns == {"qid": 7, "kind": "TC"}  # blank line 2 skipped


def test_select_families_keeps_the_named_families_and_names_a_typo(tmp_path):
    from tinyvr.data.datasets import select_families
    from tinyvr.errors import ConfigError

    f = write_lines(tmp_path / "d.jsonl", [grpo(family="color"), grpo(family="order"), grpo(),
                                           grpo(family="count"), grpo(family="color")])
    rows, _ = load_grpo_jsonl(f, tmp_path)
    assert select_families(rows, [], f) is rows
    assert [r.index for r in select_families(rows, ["color", "count"], f)] == [0, 3, 4]  # no family: out
    with pytest.raises(ConfigError, match=r"\['colour'\] not in .*d.jsonl.*\['color', 'count', 'order'\]"):
        select_families(rows, ["color", "colour"], f)
    plain, _ = load_grpo_jsonl(write_lines(tmp_path / "p.jsonl", [grpo(), grpo()]), tmp_path)
    with pytest.raises(ConfigError, match="no row of .*p.jsonl has a 'family' column"):
        select_families(plain, ["color"], tmp_path / "p.jsonl")


def test_byte_order_mark_is_ignored(tmp_path):
    f = write_lines(tmp_path / "d.jsonl", [b"\xef\xbb\xbf" + grpo().encode()])
    rows, bad = load_grpo_jsonl(f, tmp_path)
    assert len(rows) == 1 and bad == []


BAD_LINES = [
    ("{not json", "malformed JSON", None),
    ("[1, 2]", "JSON object", None),
    (json.dumps({"solution": "<answer>A</answer>", "video_filename": "a.mp4"}), "missing", "problem"),
    (grpo(problem=3), "must be a string", "problem"),
    (grpo(solution="   "), "empty", "solution"),
    (grpo(video=None), "must be a string", "video_filename"),
    (grpo(video="../outside.mp4"), "escapes video_root", "video_filename"),
    (grpo(video="/etc/passwd"), "absolute path", "video_filename"),
    (grpo(video="a/../../b.mp4"), "escapes video_root", "video_filename"),
    (b'{"problem": "caf\xe9"}', "invalid UTF-8", None),
    (grpo(problem="x" * 5000), "longer than", None),
]


@pytest.mark.parametrize("line,reason,field", BAD_LINES, ids=[r for _, r, _ in BAD_LINES])
def test_each_malformed_row_is_reported_with_line_and_field(tmp_path, line, reason, field):
    f = write_lines(tmp_path / "d.jsonl", [grpo(), line, grpo()])
    rows, bad = load_grpo_jsonl(f, tmp_path / "videos", max_line_bytes=4096)
    assert [r.index for r in rows] == [0, 2]  # the good rows around it survive
    assert len(bad) == 1
    err = bad[0]
    assert isinstance(err, DataError) and err.line == 2 and err.field == field
    assert reason in str(err) and str(f) in str(err) and ":2:" in str(err)
    if field:
        assert f"'{field}'" in str(err)


def test_outside_root_allowed_on_request(tmp_path):
    f = write_lines(tmp_path / "d.jsonl", [grpo(video="../shared/v.mp4")])
    rows, bad = load_grpo_jsonl(f, tmp_path / "videos", allow_outside_root=True)
    assert bad == [] and rows[0].video_path == (tmp_path / "shared/v.mp4").resolve()


def test_check_exists(tmp_path):
    (tmp_path / "there.mp4").write_bytes(b"x")
    f = write_lines(tmp_path / "d.jsonl", [grpo(video="./there.mp4"), grpo(video="./gone.mp4")])
    rows, bad = load_grpo_jsonl(f, tmp_path, check_exists=True)
    assert len(rows) == 1 and bad[0].line == 2 and "not found" in str(bad[0])


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_grpo_jsonl(tmp_path / "missing.jsonl", tmp_path)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no rows"):
        load_grpo_jsonl(tmp_path / "empty.jsonl", tmp_path)


def test_resolve_video_path_rules(tmp_path):
    root = tmp_path.resolve()
    assert resolve_video_path(tmp_path, "./a/b.mp4") == root / "a/b.mp4"
    assert resolve_video_path(tmp_path, "a/./c/../b.mp4") == root / "a/b.mp4"  # stays inside: fine
    for rel in ("..", "../x.mp4", "/abs.mp4", ".", "a\x00b"):
        with pytest.raises(ValueError):
            resolve_video_path(tmp_path, rel)


# -- LLaVA conversation json -------------------------------------------------------------------------


def sample(video="./NextQA/1.mp4", conversations=None, **extra):
    conversations = conversations if conversations is not None else [
        {"from": "human", "value": "<image>\nWhat happens?"},
        {"from": "gpt", "value": "<think>It moves.</think> <answer>A</answer>"}]
    return {"video": video, "conversations": conversations, **extra}


def test_conversation_good_rows(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps([sample(id="x1"), sample(video="2.mp4")], indent=2))
    rows, bad = load_conversation_json(f, tmp_path / "v")
    assert bad == [] and [r.index for r in rows] == [0, 1]
    assert isinstance(rows[0], ConversationRow) and rows[0].columns == {"id": "x1"}
    assert rows[0].video_path == (tmp_path / "v/NextQA/1.mp4").resolve()
    assert rows[0].conversations[1]["from"] == "gpt"


BAD_ITEMS = [
    ("not an object", "JSON object", "[1]"),
    ({"conversations": sample()["conversations"]}, "missing", "[1].video"),
    (sample(video=""), "empty", "[1].video"),
    (sample(video="../x.mp4"), "escapes video_root", "[1].video"),
    ({"video": "a.mp4"}, "missing", "[1].conversations"),
    (sample(conversations="hi"), "non-empty list", "[1].conversations"),
    (sample(conversations=[{"from": "human", "value": "<image>Q"}, {"from": "human", "value": "Q"}]),
     "expected 'gpt'", "[1].conversations"),
    (sample(conversations=[{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]),
     "no '<image>'", "[1].conversations"),
    (sample(conversations=[{"from": "human", "value": "<image>Q"}]), "last message", "[1].conversations"),
    (sample(conversations=[{"from": "human", "value": "<image>Q"}, {"from": "gpt", "value": " "}]),
     "empty message", "[1].conversations"),
]


@pytest.mark.parametrize("item,reason,field", BAD_ITEMS, ids=[r for _, r, _ in BAD_ITEMS])
def test_each_malformed_item_is_reported_with_index_and_field(tmp_path, item, reason, field):
    f = tmp_path / "c.json"
    f.write_text(json.dumps([sample(), item, sample()]))
    rows, bad = load_conversation_json(f, tmp_path / "v")
    assert [r.index for r in rows] == [0, 2] and len(bad) == 1
    err = bad[0]
    assert err.field == field and err.item == 1
    assert reason in str(err) and str(f) in str(err) and f"'{field}" in str(err)


def test_conversation_file_level_errors(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('[\n  {"video": "a.mp4",\n  oops\n]')
    with pytest.raises(DataError) as e:
        load_conversation_json(f, tmp_path)
    assert e.value.line == 3 and "malformed JSON" in str(e.value)
    f.write_text(json.dumps({"video": "a.mp4"}))
    with pytest.raises(DataError, match="JSON list"):
        load_conversation_json(f, tmp_path)
    f.write_bytes(b'[{"video": "\xff"}]')
    with pytest.raises(DataError, match="UTF-8"):
        load_conversation_json(f, tmp_path)


# -- bad-sample accounting ---------------------------------------------------------------------------


def test_tracker_tolerates_up_to_the_fraction():
    t = BadSampleTracker(0.2, min_samples=10)
    for _ in range(8):
        t.ok()
    t.bad(DataError("f", "first"))  # 1 of 9: below min_samples, and below the fraction anyway
    t.bad(DataError("f", "second"))  # 2 of 10 = 0.2: not more than allowed
    assert (t.num_good, t.num_bad) == (8, 2)
    with pytest.raises(DataError, match="3 of 11") as e:
        t.bad(DataError("f", "third"))
    assert "third" in str(e.value)


def test_tracker_waits_for_min_samples():
    t = BadSampleTracker(0.1, min_samples=5)
    t.bad("x")  # 1 of 1, but too few samples to judge
    with pytest.raises(DataError):
        for _ in range(4):
            t.bad("y")


def test_tracker_strict_and_initial_counts():
    with pytest.raises(DataError):
        BadSampleTracker(0.0).bad("any")
    t = BadSampleTracker(0.05, initial_bad=3, initial_good=97)
    t.check()  # 3 % of the loaded rows: fine
    t.load_state_dict({"good": 20, "bad": 5})
    assert t.state_dict() == {"good": 20, "bad": 5}
    with pytest.raises(DataError):
        t.check()
    with pytest.raises(ValueError):
        BadSampleTracker(1.5)
