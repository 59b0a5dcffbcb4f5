"""Checkpoints under faults: SIGKILL at each moment of a save, a full disk, a corrupt state file.
After any of them the previous checkpoint is what `latest()` returns, it loads, and a resumed run
finishes; the debris of a killed save is removed by the next save."""

from __future__ import annotations

import errno
import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from tinyvr.errors import CheckpointError
from tinyvr.utils import checkpoint as ckpt_mod
from tinyvr.utils.checkpoint import CheckpointManager
from tinyvr.utils.logging import read_jsonl

# Saves checkpoint step 2 of RUN and hangs (printing WRITING) at the moment named by PHASE:
#   model   - halfway through the model weights
#   state   - model written, trainer_state.pt half written
#   pointer - folder renamed to step_000002, `latest` not yet updated
KILLED_SAVE = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import torch
    from tinyvr.utils import checkpoint as ck

    run, phase = sys.argv[1], sys.argv[2]

    def hang():
        print("WRITING", flush=True)
        time.sleep(600)

    def save_model(folder):
        folder.mkdir(parents=True)
        with open(folder / "model.safetensors", "wb") as f:
            f.write(b"\\0" * (4 << 20))
            f.flush()
            if phase == "model":
                hang()

    if phase == "state":
        def slow_save(obj, path, *a, **k):
            with open(path, "wb") as f:
                f.write(b"PK\\x03\\x04 half a zip")
                f.flush()
            hang()
        ck.torch.save = slow_save
    if phase == "pointer":
        real_replace = os.replace
        def replace(src, dst):
            real_replace(src, dst)
            if Path(dst).name == "step_000002":
                hang()
        ck.os.replace = replace
    ck.CheckpointManager(run, keep=5).save(2, save_model, {"step": 2, "w": torch.full((3,), 2.0)})
    print("FINISHED", flush=True)
""")
PHASES = ("model", "state", "pointer")


def _write_model(value):
    def save(folder):
        folder.mkdir(parents=True)
        (folder / "weights.txt").write_text(str(value))
    return save


def _wait_for(proc, word: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
        if ready:
            line = proc.stdout.readline()
            if line.strip() == word:
                return
            if not line:
                break
    proc.kill()
    raise AssertionError(f"child never printed {word}: {proc.stderr.read()}")


def _kill_during_saves(runs: dict[str, str], script) -> None:
    """Start one saving child per phase (in parallel: one torch import each), SIGKILL each mid-save."""
    procs = {phase: subprocess.Popen([sys.executable, str(script), run, phase], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True) for phase, run in runs.items()}
    try:
        for phase, proc in procs.items():
            _wait_for(proc, "WRITING")
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()


@pytest.fixture(scope="module")
def killed(tmp_path_factory, sft_config):
    """{phase: run folder} after a save of step 2 was SIGKILLed at that phase. The "state" run is a
    real SFT run (checkpoint at step 1, metrics for steps 1-2); the others hold a step-1 stub."""
    from tinyvr.recipes.sft import train

    tmp = tmp_path_factory.mktemp("killed")
    script = tmp / "killed_save.py"
    script.write_text(KILLED_SAVE)
    runs = {}
    for phase in PHASES:
        run = tmp / phase
        if phase == "state":
            train(sft_config(run, "run.save_every=1", "optim.max_steps=2"))  # saves step 1, not the last
        else:
            CheckpointManager(run, keep=5).save(1, _write_model(1), {"step": 1, "w": torch.ones(3)})
        runs[phase] = run
    _kill_during_saves({phase: str(run) for phase, run in runs.items()}, script)
    return runs


@pytest.mark.parametrize("phase", PHASES)
def test_sigkill_at_any_moment_of_a_save_leaves_a_loadable_checkpoint(killed, phase):
    run = killed[phase]
    mgr = CheckpointManager(run, keep=5)
    root = mgr.root
    latest = mgr.latest()
    assert latest.name == "step_000001"  # the pointer moves last, after a complete rename
    state = CheckpointManager.load_state(latest)
    assert state["step"] == 1
    debris = sorted(p.name for p in root.iterdir() if p.name.startswith("."))
    if phase == "pointer":  # the renamed folder is complete; only the pointer did not move
        assert (root / "step_000002" / "DONE").is_file()
    else:
        assert not (root / "step_000002").exists()
        assert any(n.startswith(".tmp-step_000002-") for n in debris), debris
    if phase != "state":  # (the real run is resumed below: its next save is the recipe's)
        assert torch.equal(state["w"], torch.ones(3)) and (latest / "model" / "weights.txt").read_text() == "1"
        mgr.save(3, _write_model(3), {"step": 3, "w": torch.zeros(3)})
        assert mgr.latest().name == "step_000003"
        assert not [p for p in root.iterdir() if p.name.startswith(".")]  # debris swept by the next save


def test_resume_after_a_killed_save(killed, sft_config):
    """The real run whose step-2 save was killed while writing trainer_state.pt: `resume` continues
    from step 1, the metrics hold each step exactly once, the killed save's debris is gone."""
    from tinyvr.recipes.sft import train

    out = killed["state"]
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 0.')  # the kill cut a metrics line too
    train(sft_config(out, "run.save_every=1", "optim.max_steps=3"), resume=True)
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3]
    assert (out / "metrics.jsonl").read_bytes().endswith(b"}\n")
    mgr = CheckpointManager(out)
    assert mgr.latest().name == "step_000002" and not list(mgr.root.glob(".tmp-*"))


@pytest.mark.parametrize("where", ["model", "state", "done_marker"])
def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch, where):
    mgr = CheckpointManager(tmp_path, keep=3)
    mgr.save(1, _write_model(1), {"step": 1})
    enospc = OSError(errno.ENOSPC, "No space left on device")

    def full(*args, **kwargs):
        raise enospc

    save_model = _write_model(2)
    if where == "model":
        save_model = full
    elif where == "state":
        monkeypatch.setattr(ckpt_mod.torch, "save", full)
    else:  # the data is written; flushing it to disk (fsync before the rename) fails
        monkeypatch.setattr(ckpt_mod, "_fsync_tree", full)
    with pytest.raises(CheckpointError) as e:
        mgr.save(2, save_model, {"step": 2})
    msg = str(e.value)
    assert "step_000002" in msg and "No space left on device" in msg and "previous checkpoint is intact" in msg
    assert mgr.latest().name == "step_000001"
    assert CheckpointManager.load_state(mgr.latest())["step"] == 1
    assert not [p for p in mgr.root.iterdir() if p.name.startswith(".")]
    assert not (mgr.root / "step_000002").exists()


def test_a_serializer_error_is_a_checkpoint_error(tmp_path):
    """safetensors reports a full disk with its own exception type, not OSError."""
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _write_model(1), {"step": 1})

    class SafetensorError(Exception):
        pass

    def broken(folder):
        folder.mkdir(parents=True)
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    with pytest.raises(CheckpointError, match="SafetensorError.*previous checkpoint is intact"):
        mgr.save(2, broken, {"step": 2})
    assert mgr.latest().name == "step_000001"


@pytest.mark.parametrize("writer", ["safetensors", "torch.save"])
def test_a_real_write_failure_is_a_checkpoint_error(tmp_path, writer):
    """A file-size limit makes the real serializers fail mid-write, as a full disk does. Neither
    raises OSError (safetensors: SafetensorError, torch.save: RuntimeError)."""
    import resource

    from safetensors.torch import save_file

    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _write_model(1), {"step": 1})
    big = torch.zeros(1 << 20)  # 4 MiB, past the 1 MiB limit below

    def save_model(folder):
        folder.mkdir(parents=True)
        if writer == "safetensors":
            save_file({"w": big}, str(folder / "model.safetensors"))

    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a killed process
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        with pytest.raises(CheckpointError, match="File too large|unexpected pos|previous checkpoint is intact"):
            mgr.save(2, save_model, {"step": 2, "w": big})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert mgr.latest().name == "step_000001" and CheckpointManager.load_state(mgr.latest())["step"] == 1
    assert not [p for p in mgr.root.iterdir() if p.name.startswith(".")]


def test_interrupt_during_a_save_cleans_up_and_propagates(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _write_model(1), {"step": 1})

    def interrupted(folder):
        folder.mkdir(parents=True)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mgr.save(2, interrupted, {"step": 2})
    assert mgr.latest().name == "step_000001" and not list(mgr.root.glob(".tmp-*"))


def test_saving_the_same_step_again_replaces_it_whole(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(4, _write_model("old"), {"step": 4})
    mgr.save(4, _write_model("new"), {"step": 4, "again": True})
    latest = mgr.latest()
    assert (latest / "model" / "weights.txt").read_text() == "new"
    assert CheckpointManager.load_state(latest)["again"] is True
    assert sorted(p.name for p in mgr.root.iterdir()) == ["latest", "step_000004"]


def test_corrupt_or_hostile_state_file_is_a_checkpoint_error(tmp_path):
    mgr = CheckpointManager(tmp_path)
    ckpt = mgr.save(1, _write_model(1), {"step": 1})
    state = ckpt / "trainer_state.pt"
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2])  # bit rot / a copy cut short
    with pytest.raises(CheckpointError, match="trainer_state.pt: unreadable training state"):
        CheckpointManager.load_state(ckpt)

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"step": Evil()}, state)  # a pickle that would run a command when unpickled
    with pytest.raises(CheckpointError, match="unreadable training state"):
        CheckpointManager.load_state(ckpt)
    assert not marker.exists()  # weights_only=True: never unpickles arbitrary objects


def test_unwritable_checkpoint_folder_is_a_checkpoint_error(tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    with pytest.raises(CheckpointError, match="could not write checkpoint"):
        CheckpointManager(tmp_path).save(1, _write_model(1), {"step": 1})
