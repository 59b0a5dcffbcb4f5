"""Shared helpers of the benchmarks: set-up, interleaved timing, the EOS hook, result files.

Every benchmark measures tinyvr and its baseline in the same process, interleaved (A B A B ...),
after one warm-up call each, and reports medians. fp32, `torch.set_num_threads(os.cpu_count())`,
fixed seeds.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "runs" / "bench"

# Synthetic-dataset style multiple-choice questions (what the GRPO stage trains on).
QUESTIONS = [
    "Which direction does the red circle move? Options: A. left B. right C. up D. down",
    "Which shape appears first? Options: A. the blue square B. the green triangle C. the red circle "
    "D. the yellow star",
    "How many times does the green triangle bounce off a wall? Options: A. 0 B. 1 C. 2 D. 3",
    "What colour is the square at the end of the video? Options: A. red B. blue C. green D. yellow",
]
SOLUTIONS = ["<answer>B</answer>", "<answer>A</answer>", "<answer>C</answer>", "<answer>D</answer>"]


def threads() -> int:
    """Torch threads: `--threads` of run.py (TINYVR_BENCH_THREADS), default = all cores."""
    return int(os.environ.get("TINYVR_BENCH_THREADS") or 0) or (os.cpu_count() or 1)


def setup_torch(seed: int = 0):
    import torch

    torch.set_num_threads(threads())
    torch.manual_seed(seed)
    return torch


def tiny_model(seed: int = 0):
    """(model, processor): the tiny preset, random init, fp32, eval mode."""
    from tinyvr.recipes.common import new_model

    model, processor = new_model("tiny", seed=seed)
    return model.float().eval(), processor


def prompt_ids(processor, n: int) -> list[list[int]]:
    from tinyvr.data.template import GRPO_QUESTION_TEMPLATE

    return [processor.encode_prompt(GRPO_QUESTION_TEMPLATE.format(Question=QUESTIONS[i % len(QUESTIONS)]))
            for i in range(n)]


def random_videos(model, n: int, seed: int = 0):
    """Pixel values [n, T, 3, S, S] in the processor's [-1, 1] range."""
    import torch

    cfg = model.config
    size = cfg.vision_config.image_size
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, cfg.num_frames, 3, size, size, generator=g) * 2 - 1


@contextmanager
def no_eos(lm, eos_id: int):
    """Fixed-length completions on both sides: the LM head's EOS logit is set to -inf.

    A forward hook on `lm_head`, so it acts identically inside `generate`, the RolloutEngine
    and TRL (it is the equivalent of HF's `min_new_tokens` logits processor).
    """
    import torch

    def hook(module, inputs, output):
        return output.index_fill(-1, torch.tensor([eos_id], device=output.device), float("-inf"))

    handle = lm.get_output_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def interleaved(fns: dict[str, Callable[[int], object]], repeats: int, warmup: bool = True):
    """`fn(-1)` once each as a warm-up (callables may make it a short run), then `repeats` rounds
    A B A B ... calling `fn(round)` (the order alternates per round).
    Returns {name: {"wall_s": [...], "cpu_s": [...], "results": [...]}}.

    cpu_s is the process CPU time (all threads): on a machine shared with other jobs it moves
    much less than wall time, so it is kept next to it as a second view of the same runs.
    """
    if warmup:
        for fn in fns.values():
            fn(-1)
    out = {k: {"wall_s": [], "cpu_s": [], "results": []} for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in (names if r % 2 == 0 else names[::-1]):
            c0, t0 = time.process_time(), time.perf_counter()
            res = fns[k](r)
            out[k]["wall_s"].append(round(time.perf_counter() - t0, 4))
            out[k]["cpu_s"].append(round(time.process_time() - c0, 4))
            out[k]["results"].append(res)
    return out


def summary(runs: dict, work: float | None = None, unit: str = "") -> dict:
    """Medians of one side's runs, and `work / median` rates when `work` (tokens, frames) is given."""
    out = {"wall_s": runs["wall_s"], "cpu_s": runs["cpu_s"],
           "median_wall_s": median(runs["wall_s"]), "median_cpu_s": median(runs["cpu_s"])}
    if work is not None:
        out[f"{unit}_per_s"] = work / out["median_wall_s"]
        out[f"{unit}_per_cpu_s"] = work / out["median_cpu_s"]
        out[unit] = work
    return out


def median(xs):
    return statistics.median(xs) if xs else None


def environment() -> dict:
    import torch

    la = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "loadavg": [round(x, 2) for x in la] if la else None,
    }


def write_result(name: str, result: dict, out_dir: Path = OUT_DIR) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"name": name, **result}
    result.setdefault("env", environment())
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def fmt_ratio(r) -> str:
    return "n/a" if r is None else f"{r:.2f}x"
