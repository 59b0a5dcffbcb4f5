"""Atomic training checkpoints for exact resume.

Layout under `<run>/checkpoints/`:
    step_000040/           one complete checkpoint (written as `.tmp-*` then renamed)
        model/             HF-style folder (config.json, model.safetensors, tokenizer files)
        trainer_state.pt   optimizer, scheduler, RNG states, data position, step (tensors only)
        rng_rank{r}.pt     rank r's own RNG states and data position (one per rank; the ranks sample
                           with different generators and may skip different bad samples)
        DONE               marker written last, inside the temporary folder
    latest                 text file naming the newest complete checkpoint

A rename is atomic on POSIX: a kill at any moment leaves either the previous checkpoint set or the
new one, never a half-written folder that resume would pick up. Every file is fsync'ed before the
rename (a power cut cannot leave a DONE marker beside empty weights). Stale `.tmp-*` folders and
`.latest-*` files of a killed save are removed by the next successful save. Any failure while
writing (disk full, permissions, a serializer error) raises CheckpointError and leaves the
previous checkpoint as it was.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tinyvr.errors import CheckpointError


def _to_safe(obj):
    """Convert numpy arrays (numpy RNG state) so `torch.load(weights_only=True)` accepts them."""
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": torch.from_numpy(obj.copy()), "dtype": str(obj.dtype)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_to_safe(o) for o in obj]}
    if isinstance(obj, list):
        return [_to_safe(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _to_safe(v) for k, v in obj.items()}
    return obj


def _from_safe(obj):
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return obj["__ndarray__"].numpy().astype(obj["dtype"])
        if "__tuple__" in obj:
            return tuple(_from_safe(o) for o in obj["__tuple__"])
        return {k: _from_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_safe(o) for o in obj]
    return obj


def _fsync_file(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then the folders themselves (data before the rename)."""
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            _fsync_file(p)
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        _fsync_dir(d)
    _fsync_dir(folder)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


class CheckpointManager:
    def __init__(self, run_dir: str | Path, keep: int = 2):
        self.root = Path(run_dir) / "checkpoints"
        self.keep = keep

    def save(self, step: int, save_model: Callable[[Path], None], state: dict,
             rank_states: list[dict] | None = None) -> Path:
        """Write checkpoint `step`: `save_model(folder)` writes the model, `state` the rest, and
        `rank_states[r]` goes to `rng_rank{r}.pt` (inside the same atomic folder)."""
        final = self.root / f"step_{step:06d}"
        tmp = self.root / f".tmp-step_{step:06d}-{os.getpid()}"
        latest_tmp = self.root / f".latest-{os.getpid()}"
        aside = self.root / f".tmp-old-{final.name}-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            save_model(tmp / "model")
            torch.save(_to_safe(state), tmp / "trainer_state.pt")
            for r, rs in enumerate(rank_states or []):
                torch.save(_to_safe(rs), tmp / f"rng_rank{r}.pt")
            (tmp / "DONE").write_text(str(step))
            _fsync_tree(tmp)
            if final.exists():  # the same step saved again: move the old one aside, never delete first
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(final, aside)
            os.replace(tmp, final)
            latest_tmp.write_text(final.name)
            _fsync_file(latest_tmp)
            os.replace(latest_tmp, self.root / "latest")
            _fsync_dir(self.root)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                latest_tmp.unlink(missing_ok=True)
                if aside.exists() and not final.exists():  # failed between the two renames
                    os.replace(aside, final)
            except OSError:
                pass  # the pointer still names a complete checkpoint; the next save sweeps the rest
            if isinstance(e, Exception):  # disk full, permissions, a serializer's own error type
                reason = f"{type(e).__name__}: {e}" if not isinstance(e, OSError) else str(e)
                raise CheckpointError(
                    f"could not write checkpoint {final} ({reason}); the previous checkpoint is intact"
                ) from e
            raise  # KeyboardInterrupt / SystemExit: cleaned up, passed on
        self._prune()
        return final

    def _complete(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("step_*") if (p / "DONE").is_file())

    def _prune(self) -> None:
        for p in self._complete()[: -self.keep]:
            shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".tmp-*"):  # left by a killed save (or moved aside above)
            shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".latest-*"):
            p.unlink(missing_ok=True)

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        pointer = self.root / "latest"
        if pointer.is_file():
            p = self.root / pointer.read_text().strip()
            if (p / "DONE").is_file():
                return p
        done = self._complete()
        return done[-1] if done else None

    @staticmethod
    def load_state(ckpt: Path) -> dict:
        path = Path(ckpt) / "trainer_state.pt"
        if not path.is_file():
            raise CheckpointError(f"{ckpt}: no trainer_state.pt (incomplete checkpoint)")
        return CheckpointManager._load(path)

    @staticmethod
    def load_rank_state(ckpt: Path, rank: int) -> dict | None:
        """Rank `rank`'s own state (`rng_rank{rank}.pt`), or None when the checkpoint has none."""
        path = Path(ckpt) / f"rng_rank{rank}.pt"
        return CheckpointManager._load(path) if path.is_file() else None

    @staticmethod
    def _load(path: Path) -> dict:
        try:  # weights_only: tensors and plain containers only, never arbitrary pickled objects
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path}: unreadable training state ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''})") from e
        return _from_safe(state)


RUN_LOCK = "RUNNING"


def claim_run_folder(folder: str | Path) -> Path:
    """Mark `folder` as in use by this process. Two processes training into one run folder would
    interleave metrics.jsonl and overwrite each other's checkpoints, so a second one is refused.
    The lock file holds host and pid and is created atomically (O_EXCL), so of two processes that
    start together one wins. A lock whose process is gone (a crash, a kill -9) is taken over, so a
    resume never needs a manual clean-up; the same process may claim again (a resume in one Python
    session)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock, me = folder / RUN_LOCK, _lock_owner()
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = lock.read_text().split()
                host, pid = owner[0], int(owner[1])
            except (FileNotFoundError, ValueError, IndexError):
                owner = None  # removed meanwhile, or a half-written lock
            if owner == me:
                return lock
            if owner and (host != me[0] or _pid_alive(pid)):
                raise CheckpointError(f"{folder}: another training process ({host}, pid {pid}) is using this run "
                                      f"folder; wait for it to finish or set another run.output_dir (if no such "
                                      f"process runs, delete {lock})") from None
            lock.unlink(missing_ok=True)  # its owner is gone: take it over with a fresh atomic create
            continue
        with os.fdopen(fd, "w") as f:
            f.write(" ".join(me) + "\n")
        return lock
    raise CheckpointError(f"{folder}: could not take the run folder's lock {lock}; another process keeps "
                          "replacing it")


def release_run_folder(folder: str | Path) -> None:
    """Remove this process's lock (a finished stage); another process's lock is left alone."""
    lock = Path(folder) / RUN_LOCK
    try:
        if lock.read_text().split() == _lock_owner():
            lock.unlink()
    except (FileNotFoundError, ValueError):
        pass


def _lock_owner() -> list[str]:
    import socket

    return [socket.gethostname(), str(os.getpid())]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
