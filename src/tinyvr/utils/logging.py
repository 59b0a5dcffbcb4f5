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
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))
            except Exception as e:  # tensorboard is optional at run time
                print(f"[tinyvr] tensorboard disabled: {e}", file=sys.stderr)

    def truncate_after(self, step: int) -> None:
        """Drop lines with step > `step` (resume after a crash mid-interval)."""
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill is dropped
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, self.path)

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
    """Append-only jsonl file with a flush per record (rollout samples, predictions)."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()


def read_jsonl(path: str | Path) -> list[dict]:
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def banner(text: str) -> None:
    bar = "=" * max(20, len(text) + 4)
    print(f"\n{bar}\n  {text}\n{bar}", flush=True)


def info(msg: str) -> None:
    print(f"[tinyvr {time.strftime('%H:%M:%S')}] {msg}", flush=True)
