import json
import os
import random

import numpy as np
import pytest
import torch

from tinyvr.errors import CheckpointError
from tinyvr.utils.checkpoint import CheckpointManager
from tinyvr.utils.logging import MetricsLogger, read_jsonl
from tinyvr.utils.seed import rng_state, seed_everything, set_rng_state


def _model_writer(value):
    def save(folder):
        folder.mkdir(parents=True)
        (folder / "weights.txt").write_text(str(value))
    return save


def test_save_latest_prune_and_state_roundtrip(tmp_path):
    gen = seed_everything(3)
    mgr = CheckpointManager(tmp_path, keep=2)
    state = {"step": 1, "rng": rng_state(gen), "opt": {"m": torch.ones(3)}}
    for step in (1, 2, 3):
        mgr.save(step, _model_writer(step), {**state, "step": step})
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert kept == ["step_000002", "step_000003"]
    latest = mgr.latest()
    assert latest.name == "step_000003" and (latest / "model" / "weights.txt").read_text() == "3"
    loaded = CheckpointManager.load_state(latest)
    assert loaded["step"] == 3 and torch.equal(loaded["opt"]["m"], torch.ones(3))
    # RNG state restores exactly: same draws after restore
    a = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    set_rng_state(loaded["rng"], gen)
    b = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    assert a == b


def test_failed_write_keeps_previous(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=3)
    mgr.save(1, _model_writer(1), {"step": 1})

    def broken(folder):
        folder.mkdir(parents=True)
        raise OSError(28, "No space left on device")

    with pytest.raises(CheckpointError, match="previous checkpoint is intact"):
        mgr.save(2, broken, {"step": 2})
    assert mgr.latest().name == "step_000001"
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_half_written_checkpoint_is_ignored(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _model_writer(1), {"step": 1})
    # a kill mid-write leaves a temporary folder (and no DONE marker): resume must not pick it
    half = tmp_path / "checkpoints" / ".tmp-step_000002-999"
    (half / "model").mkdir(parents=True)
    fake = tmp_path / "checkpoints" / "step_000005"
    fake.mkdir()  # no DONE
    (tmp_path / "checkpoints" / "latest").write_text("step_000005")
    assert mgr.latest().name == "step_000001"


def test_metrics_logger_truncate_after(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    for s in range(1, 6):
        log.log(s, {"loss": float(s), "nan": float("nan")})
    with open(log.path, "a") as f:
        f.write('{"step": 6, "loss"')  # a line cut by a kill
    log.truncate_after(3)
    rows = read_jsonl(log.path)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[0]["nan"] == "nan"
    json.dumps(rows)


def test_run_folder_lock_is_reentrant_in_one_process_and_release_keeps_another_owners_lock(tmp_path):
    import os
    import socket

    from tinyvr.errors import CheckpointError
    from tinyvr.utils.checkpoint import RUN_LOCK, claim_run_folder, release_run_folder

    lock = claim_run_folder(tmp_path / "run")
    assert lock.read_text().split() == [socket.gethostname(), str(os.getpid())]
    assert claim_run_folder(tmp_path / "run") == lock  # a resume in the same Python session
    release_run_folder(tmp_path / "run")
    assert not lock.exists()
    # a lock from another machine cannot be checked for a live process: refused, with the file to delete
    lock.write_text("another-host 4242\n")
    with pytest.raises(CheckpointError, match=f"another-host, pid 4242.*delete .*{RUN_LOCK}"):
        claim_run_folder(tmp_path / "run")
    release_run_folder(tmp_path / "run")
    assert lock.read_text() == "another-host 4242\n"  # not ours: left alone
    lock.write_text("garbled")  # a half-written lock counts as no lock
    claim_run_folder(tmp_path / "run")
    assert lock.read_text().split()[1] == str(os.getpid())
