"""memory: peak resident memory (RSS) of one tiny GRPO step, each side in its own process.

A child process imports torch/transformers, builds the tiny model (policy + reference copy),
runs one warm-up step with 4 new tokens, resets the kernel's peak-RSS mark, runs one full step
(1 prompt x G = 8, the grpo_step settings) and reports the peak RSS during that step (VmHWM), the
RSS before it, and `ru_maxrss` of the whole process (start-up included: building the tiny BPE
tokenizer dominates it). The
original's step (benchmarks/grpo_step.py) is measured the same way for comparison. No target:
ratio = null, passed = true when the number was measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _rss_mb() -> float | None:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return None


def _peak_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _status_mb(field: str) -> float | None:
    """VmRSS / VmHWM (peak) of this process from /proc, in MB; None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux: `echo 5 > /proc/self/clear_refs`)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(side: str, quick: bool) -> dict:
    import grpo_step as GS

    torch, cfg, model, processor, prompts, pixels, new_tokens = GS._build(quick)
    make = GS.make_tinyvr_step if side == "tinyvr" else GS.make_original_step
    step = make(cfg, model, processor, prompts, pixels)
    arg = [0] if side == "tinyvr" else 0
    step(arg, 4)  # warm-up (4 new tokens)
    before = _status_mb("VmRSS") or _rss_mb()
    reset = _reset_peak()
    step(arg)
    step_peak = _status_mb("VmHWM") if reset else None
    return {"side": side,
            "step_peak_rss_mb": None if step_peak is None else round(step_peak, 1),
            "step_increase_mb": None if step_peak is None or before is None else round(step_peak - before, 1),
            "rss_before_step_mb": None if before is None else round(before, 1),
            "process_peak_rss_mb": round(_peak_mb(), 1),
            "max_new_tokens": new_tokens, "num_generations": cfg.rollout.num_generations}


def _spawn(side: str, quick: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side] + (["--quick"] if quick else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent / "src"),
                                                       os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"memory child '{side}' failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    tinyvr = _spawn("tinyvr", quick)
    original = _spawn("original", quick)
    def show(r):
        if r["step_peak_rss_mb"] is None:
            return f"process peak {r['process_peak_rss_mb']:.0f} MB (step peak not separable here)"
        return (f"{r['step_peak_rss_mb']:.0f} MB during the step (+{r['step_increase_mb']:.0f} MB over the "
                f"{r['rss_before_step_mb']:.0f} MB before it)")

    print(f"memory: peak RSS of one tiny GRPO step (1 prompt x G={tinyvr['num_generations']} x "
          f"{tinyvr['max_new_tokens']} tokens, policy + reference): tinyvr {show(tinyvr)}; original {show(original)}")
    measured = (tinyvr["step_peak_rss_mb"] or tinyvr["process_peak_rss_mb"] or 0) > 0
    return {"ratio": None, "target": None, "passed": measured, "unit": "MB peak RSS",
            "tinyvr": tinyvr, "baseline": original,
            "method": "a fresh child process per side; after a warm-up step the kernel's peak-RSS mark is "
                      "reset (/proc/self/clear_refs = 5) and VmHWM read after one full step; "
                      "process_peak_rss_mb is ru_maxrss of the whole process (includes start-up)"}


if __name__ == "__main__":
    if "--child" in sys.argv:
        sys.path[:0] = [str(HERE), str(HERE.parent / "src")]
        import benchlib  # noqa: F401  (sets nothing; keeps the import path check early)

        print(json.dumps(child(sys.argv[sys.argv.index("--child") + 1], "--quick" in sys.argv)))
    else:
        print(json.dumps(run("--quick" in sys.argv), indent=2))
