"""metrics.jsonl and rollouts.jsonl under kills: no logged line is lost, a cut last line never
swallows the next record, and a resume leaves each step exactly once."""

from __future__ import annotations

import json

from tinyvr.utils.logging import JsonlWriter, MetricsLogger, read_jsonl


def test_every_logged_line_is_on_disk_when_log_returns(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    for step in range(1, 6):
        log.log(step, {"loss": 1.0 / step, "nan": float("nan")})
        # read back through a separate handle, as a process reading after a SIGKILL would
        assert len((tmp_path / "metrics.jsonl").read_bytes().splitlines()) == step
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and rows[0]["nan"] == "nan"


def test_a_cut_last_line_does_not_swallow_the_next_record(tmp_path):
    """A kill mid-write leaves a line without newline; the next process appends after it. Without
    repair the two would glue into one invalid line and the new record would be lost."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    log = MetricsLogger(tmp_path, tensorboard=False)  # opening repairs the tail
    log.log(2, {"loss": 1.5})
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_truncate_after_resume_keeps_each_step_once(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    for step in range(1, 6):
        log.log(step, {"loss": float(step)})
    with open(log.path, "ab") as f:
        f.write(b'{"step": 6, "loss": \xff')  # cut mid-record, even mid-character
    log.truncate_after(3)  # resumed from the step-3 checkpoint
    for step in range(4, 7):
        log.log(step, {"loss": float(step) + 0.5})
    rows = read_jsonl(log.path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[3]["loss"] == 4.5  # the redone steps' numbers, not the lost run's


def test_rollout_log_survives_a_cut_line_and_a_resume(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    w = JsonlWriter(path)
    for step in (1, 2, 3):
        w.write({"step": step, "completions": ["<think>é</think><answer>A</answer>"]})
    with open(path, "a") as f:
        f.write('{"step": 4, "completions": ["<thi')  # killed mid-record
    w = JsonlWriter(path, fsync=True)  # the resumed process
    w.truncate_after(2)  # resumed from step 2: steps 3+ will be written again
    w.write({"step": 3, "completions": ["again"]})
    rows = read_jsonl(path)
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[2]["completions"] == ["again"]
    assert rows[0]["completions"][0].startswith("<think>é")  # UTF-8 kept as is


def test_read_jsonl_tolerates_garbage(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"step": 1}\n\n\xff\xfe\n{"step": 2}\n{"step": 3, "lo')
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_truncate_after_ignores_non_records(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n[1, 2]\n"text"\n{"step": "x"}\n{"step": 2}\n')
    log = MetricsLogger(tmp_path, tensorboard=False)
    log.truncate_after(5)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_a_complete_record_missing_only_its_newline_is_kept(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}')  # killed between the record and its newline
    w = JsonlWriter(path)
    w.write({"step": 3})
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3]
