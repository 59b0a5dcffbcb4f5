"""Run logging: metrics.jsonl (flushed per line), TensorBoard, console messages."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path


def _clean(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep the fact visible
    return v


def drop_partial_line(path: Path) -> None:
    """Repair a last line without newline (a write killed half-way) so the next append starts a
    line of its own instead of gluing a good record onto the broken one: a complete JSON record
    gets its newline, anything else is cut."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            pos, block, cut = size, 1 << 16, 0  # find the last newline, reading backwards
            while pos > 0:
                start = max(0, pos - block)
                f.seek(start)
                nl = f.read(pos - start).rfind(b"\n")
                if nl >= 0:
                    cut = start + nl + 1
                    break
                pos = start
            f.seek(cut)
            try:
                json.loads(f.read())
                f.write(b"\n")  # only the newline was lost
            except ValueError:
                f.truncate(cut)
    except FileNotFoundError:
        return


def _truncate_jsonl(path: Path, step: int, key: str = "step") -> None:
    """Keep only the well-formed records with `key` <= step (atomic rewrite)."""
    if not path.exists():
        return
    keep = []
    with open(path, "rb") as f:
        for raw in f:
            try:
                row = json.loads(raw)
            except ValueError:  # a line cut by a kill (or not UTF-8) is dropped
                continue
            if isinstance(row, dict) and isinstance(row.get(key, 0), (int, float)) and row.get(key, 0) <= step:
                keep.append(raw.rstrip(b"\n") + b"\n")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.writelines(keep)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class MetricsLogger:
    """Append one JSON line per step to `metrics.jsonl` and mirror scalars to TensorBoard.

    Each line is written and fsync'ed before the call returns, so a killed run loses no line that
    was logged. On resume, lines past the resumed step are dropped first, so the file matches an
    uninterrupted run.
    """

    def __init__(self, out_dir: str | Path, *, tensorboard: bool = True, enabled: bool = True,
                 filename: str = "metrics.jsonl"):
        self.path = Path(out_dir) / filename
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        drop_partial_line(self.path)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))
            except Exception as e:  # tensorboard is optional at run time
                print(f"[tinyvr] tensorboard disabled: {e}", file=sys.stderr)

    def truncate_after(self, step: int) -> None:
        """Drop lines with step > `step` (resume after a crash mid-interval)."""
        if self.enabled:
            _truncate_jsonl(self.path, step)

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class JsonlWriter:
    """Append-only jsonl file with a flush per record (rollout samples, predictions).

    A last line cut by a kill is dropped on opening (the next record starts a fresh line);
    `truncate_after(step)` drops records past a resumed step; `fsync=True` syncs every record.
    """

    def __init__(self, path: str | Path, enabled: bool = True, *, fsync: bool = False):
        self.path = Path(path)
        self.enabled, self.fsync = enabled, fsync
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            drop_partial_line(self.path)

    def truncate_after(self, step: int, key: str = "step") -> None:
        """Drop records whose `key` is past `step` (resume: they will be written again)."""
        if self.enabled:
            _truncate_jsonl(self.path, step, key)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict]:
    out = []
    p = Path(path)
    if not p.exists():
        return out
    with open(p, "rb") as f:
        for raw in f:
            try:
                out.append(json.loads(raw))
            except ValueError:  # a cut line or invalid UTF-8
                continue
    return out


def banner(text: str) -> None:
    bar = "=" * max(20, len(text) + 4)
    print(f"\n{bar}\n  {text}\n{bar}", flush=True)


def info(msg: str) -> None:
    print(f"[tinyvr {time.strftime('%H:%M:%S')}] {msg}", flush=True)
