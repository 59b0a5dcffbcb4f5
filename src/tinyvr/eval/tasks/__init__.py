"""Evaluation tasks: name -> Task. Each reads its benchmark's own released files.

    task = get_task("mvbench")
    items = task.load("/data/MVBench", limit=None)          # ItemList of EvalItem
    text = task.prompt(items[0], "reason")                   # "<image>\\n…"
    scores = task.aggregate(records)                         # {"Action Sequence": 0.5, …, "Avg": …}
"""

from __future__ import annotations

from tinyvr.errors import ConfigError
from tinyvr.eval.tasks.base import (
    MODES,
    OPTION_SUFFIX,
    REASON_SUFFIX,
    EvalItem,
    ItemList,
    Task,
)
from tinyvr.eval.tasks.mlvu import MLVU
from tinyvr.eval.tasks.mmvu import MMVU
from tinyvr.eval.tasks.mvbench import MVBench
from tinyvr.eval.tasks.synthetic import Synthetic
from tinyvr.eval.tasks.videomme import VideoMME

TASKS: dict[str, Task] = {t.name: t for t in (MVBench(), VideoMME(), MLVU(), MMVU(), Synthetic())}

# Column titles of the paper's results table (§9), in its order.
DISPLAY_NAMES = {
    "mvbench": "MVBench",
    "videomme": "Video-MME (wo sub)",
    "mlvu": "MLVU",
    "mmvu": "MMVU (mc)",
    "synthetic": "Synthetic",
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown eval task {name!r}; valid: {sorted(TASKS)}") from None


__all__ = ["TASKS", "DISPLAY_NAMES", "get_task", "EvalItem", "ItemList", "Task", "MODES",
           "REASON_SUFFIX", "OPTION_SUFFIX"]
