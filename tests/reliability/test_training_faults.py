"""Faults during a real SFT run: a NaN loss skips its update, a corrupt video is skipped and
counted, too many bad samples stop the run naming the file, a failed checkpoint write keeps the
previous checkpoint and resume continues from it."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tinyvr.errors import CheckpointError, ConfigError, DataError
from tinyvr.utils.logging import read_jsonl


def _trainable_snapshot(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters() if p.requires_grad])


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory, tiny_data, tiny_model):
    """A 3-step SFT run whose loss is NaN on step 2; params seen by each forward are recorded."""
    from tinyvr.config import load_config
    from tinyvr.model import TinyVideoForConditionalGeneration as Model
    from tinyvr.recipes.sft import train

    out = tmp_path_factory.mktemp("nan_run")
    cfg = load_config("configs/tiny/sft.yaml", [
        f"run.output_dir={out}", f"model.init_from={tiny_model}", f"data.train_file={tiny_data / 'sft.json'}",
        f"data.video_root={tiny_data}", "data.eval_file=", "optim.max_steps=3", "optim.batch_size=2",
        "optim.scheduler=constant", "optim.warmup_ratio=0", "run.progress=false", "run.tensorboard=false",
        "run.threads=1"])
    seen = []
    real = Model.forward

    def forward(self, *args, **kwargs):
        seen.append(_trainable_snapshot(self))
        out = real(self, *args, **kwargs)
        if len(seen) == 2:  # the second training step's loss becomes NaN (graph kept: backward would run)
            out.loss = out.loss * float("nan")
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(Model, "forward", forward)
    try:
        final = train(cfg)
    finally:
        mp.undo()
    return {"out": out, "final": final, "seen": seen, "metrics": read_jsonl(out / "metrics.jsonl")}


def test_nan_loss_skips_the_update_and_the_run_finishes(nan_run):
    seen = nan_run["seen"]
    assert len(seen) == 3  # one forward per step: the run went on after the NaN
    assert not torch.equal(seen[0], seen[1])  # step 1 updated the weights
    assert torch.equal(seen[1], seen[2])  # step 2 (NaN) did not
    weights = load_file(str(nan_run["final"] / "model.safetensors"))
    assert all(bool(torch.isfinite(t).all()) for t in weights.values())
    last = nan_run["metrics"][-1]
    assert last["step"] == 3 and last["skipped_updates"] == 1
    # the skipped step is logged too, its loss visibly "nan" (JSON has no NaN); the others are numbers
    assert [r["loss"] == "nan" for r in nan_run["metrics"]] == [False, True, False]
    assert all(isinstance(r["loss"], float) for r in nan_run["metrics"] if r["step"] != 2)


def test_nan_step_still_has_its_metrics_line(nan_run):
    assert [r["step"] for r in nan_run["metrics"]] == [1, 2, 3]


def _with_corrupt_video(tiny_data, data_root, fault_videos, name="truncated_mkv"):
    shutil.copy(fault_videos[name], data_root / "corrupt.mkv")
    items = json.loads((tiny_data / "sft.json").read_text())
    items.append(dict(items[0], id="corrupt", video="corrupt.mkv"))
    path = data_root / "sft.json"
    path.write_text(json.dumps(items))
    return path


def test_corrupt_video_is_skipped_counted_and_named(sft_config, tmp_path, tiny_data, data_root, fault_videos,
                                                    capsys):
    from tinyvr.recipes.sft import train

    train_file = _with_corrupt_video(tiny_data, data_root, fault_videos)
    # 3 steps x 2 samples draw all 5 rows at least once: the corrupt one is hit
    final = train(sft_config(tmp_path / "run", train_file=train_file, video_root=data_root))
    assert (final / "model.safetensors").is_file()
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["bad_samples"] >= 1
    log = capsys.readouterr().out
    line = next(x for x in log.splitlines() if "skipped sample 4:" in x)
    assert f"{data_root / 'corrupt.mkv'}: " in line and "truncated" in line


def test_strict_bad_sample_policy_stops_naming_the_file(sft_config, tmp_path, tiny_data, data_root, fault_videos):
    from tinyvr.recipes.sft import train

    train_file = _with_corrupt_video(tiny_data, data_root, fault_videos, "audio_only")
    cfg = sft_config(tmp_path / "run", "data.max_bad_fraction=0", train_file=train_file, video_root=data_root)
    with pytest.raises(DataError) as e:
        train(cfg)
    msg = str(e.value)
    assert "more than max_bad_fraction=0.0" in msg and str(data_root / "corrupt.mkv") in msg
    assert "no video stream" in msg
    assert not (tmp_path / "run" / "model").exists()  # stopped: no final model pretends to be finished


def test_malformed_rows_stop_the_run_before_training(sft_config, tmp_path, tiny_data):
    """Rows are checked when the file is read: a file of bad rows fails before step 1."""
    from tinyvr.recipes.sft import train

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"video": "../../etc/passwd", "conversations": []}, {"conversations": 3}]))
    with pytest.raises((DataError, ConfigError), match="no usable rows"):
        train(sft_config(tmp_path / "run", train_file=bad))
    assert read_jsonl(tmp_path / "run" / "metrics.jsonl") == []


def test_disk_full_at_a_checkpoint_keeps_the_previous_and_resume_works(sft_config, tmp_path, monkeypatch):
    """save_every=1: step 1 saves; the step-2 save hits ENOSPC -> CheckpointError, step_000001
    intact; `--resume` continues from step 1 and finishes with one metrics line per step."""
    from tinyvr.recipes.sft import train
    from tinyvr.utils import checkpoint as ckpt_mod
    from tinyvr.utils.checkpoint import CheckpointManager

    out = tmp_path / "run"
    cfg = sft_config(out, "run.save_every=1", "optim.max_steps=4")
    real_save = ckpt_mod.torch.save

    def full_disk(obj, path, *a, **k):
        if "step_000002" in str(path):  # the disk fills up while step 2's checkpoint is written
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoint is intact"):
        train(cfg)
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    mgr = CheckpointManager(out)
    assert mgr.latest().name == "step_000001"
    assert CheckpointManager.load_state(mgr.latest())["step"] == 1
    assert not list((out / "checkpoints").glob(".tmp-*"))
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]

    train(cfg, resume=True)
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3, 4]  # step 2 redone once
    assert mgr.latest().name == "step_000003"


# -- GRPO: the same faults in the RL loop, and its rollout log ---------------------------------------


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory, tiny_data, tiny_model, fault_videos):
    """3 GRPO steps on rl.jsonl + one row whose video is corrupt; the policy loss is NaN at step 2.
    Checkpoints every step; rollouts logged every step."""
    from tinyvr.config import load_config
    from tinyvr.recipes import grpo

    tmp = tmp_path_factory.mktemp("grpo_run")
    root = tmp / "root"
    root.mkdir()
    os.symlink(tiny_data / "videos", root / "videos")
    shutil.copy(fault_videos["random_bytes"], root / "noise.mp4")
    lines = (tiny_data / "rl.jsonl").read_text().splitlines()
    lines.append(json.dumps(dict(json.loads(lines[0]), id="noise", video_filename="./noise.mp4")))
    (root / "rl.jsonl").write_text("\n".join(lines) + "\n")

    def cfg(max_steps):
        return load_config("configs/tiny/grpo.yaml", [
            f"run.output_dir={tmp / 'run'}", f"model.init_from={tiny_model}", f"data.train_file={root / 'rl.jsonl'}",
            f"data.video_root={root}", "data.eval_file=", f"optim.max_steps={max_steps}", "optim.batch_size=2",
            "rollout.num_generations=2", "rollout.max_new_tokens=8", "run.rollout_log_every=1", "run.save_every=1",
            "run.progress=false", "run.tensorboard=false", "run.threads=1"])

    calls = []
    real = grpo.policy_loss

    def nan_on_step_2(*args, **kwargs):
        loss, metrics = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 2 else loss), metrics

    mp = pytest.MonkeyPatch()
    mp.setattr(grpo, "policy_loss", nan_on_step_2)
    try:
        final = grpo.train(cfg(3))
    finally:
        mp.undo()
    run = tmp / "run"
    first = {"metrics": read_jsonl(run / "metrics.jsonl"), "rollouts": read_jsonl(run / "rollouts.jsonl")}
    grpo.train(cfg(3), resume=True)  # as after a kill between step 3's log and the end of the run
    return {"final": final, "run": run, **first, "resumed_metrics": read_jsonl(run / "metrics.jsonl"),
            "resumed_rollouts": read_jsonl(run / "rollouts.jsonl")}


def test_grpo_skips_bad_video_and_nan_update(grpo_run):
    rows = grpo_run["metrics"]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[1].get("skipped_updates") == 1 and "skipped_updates" not in rows[0]
    assert rows[-1]["bad_samples"] >= 1  # 3 steps x 2 prompts draw all 5 rows: the noise video is hit
    weights = load_file(str(grpo_run["final"] / "model.safetensors"))
    assert all(bool(torch.isfinite(t).all()) for t in weights.values())
    assert [r["step"] for r in grpo_run["rollouts"]] == [1, 1, 2, 2, 3, 3]  # one record per prompt per step
    assert "noise" not in {r["prompt_id"] for r in grpo_run["rollouts"]}


def test_grpo_resume_keeps_each_metrics_line_once(grpo_run):
    assert [r["step"] for r in grpo_run["resumed_metrics"]] == [1, 2, 3]


def test_grpo_resume_keeps_each_rollout_record_once(grpo_run):
    assert [r["step"] for r in grpo_run["resumed_rollouts"]] == [1, 1, 2, 2, 3, 3]


def test_a_second_process_in_the_same_run_folder_is_refused_and_a_dead_ones_lock_is_taken_over(sft_config,
                                                                                                tmp_path):
    """Two trainings into one folder would interleave metrics.jsonl and checkpoints: the second is
    refused before it writes anything; once the first is gone (crash, kill -9) its lock is stale
    and the run goes ahead, leaving no lock when it finishes."""
    import socket
    import subprocess

    from tinyvr.recipes.sft import train
    from tinyvr.utils.checkpoint import RUN_LOCK

    out = tmp_path / "run"
    out.mkdir()
    other = subprocess.Popen(["sleep", "60"])  # stands in for a training process that is still running
    try:
        (out / RUN_LOCK).write_text(f"{socket.gethostname()} {other.pid}\n")
        with pytest.raises(CheckpointError, match=f"another training process .*pid {other.pid}"):
            train(sft_config(out))
        assert sorted(p.name for p in out.iterdir()) == [RUN_LOCK]  # nothing written
    finally:
        other.kill()
        other.wait()
    final = train(sft_config(out))  # the owner is dead: its lock is taken over
    assert (final / "config.json").is_file() and not (out / RUN_LOCK).exists()
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3]
