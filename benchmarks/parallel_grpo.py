"""parallel_grpo: two GRPO runs side by side, one thread each, against the same two runs one after
the other with all threads (what `tinyvr demo --seeds N --jobs J` chooses between).

Each side is a set of child processes that build the tiny model (random init, fp32), take one
warm-up step, report ready and wait; the parent then starts them together and each times its own
steps (`make_tinyvr_step` of grpo_step.py: the demo's GRPO step, 4 prompts x G = 8 completions,
rollout + rewards + advantages + update). Work is equal: the sequential side is one child at all
cores' threads taking 2 x STEPS steps (two runs' worth), the parallel side two children at
cores / 2 threads taking STEPS steps each. Wall time is from the common start to the last child's
last step; start-up (imports, model) is left out on both sides. Sides alternate (S P P S ...).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = 1.2  # side by side at least 1.2x sooner on this 2-core machine
STEPS, STEPS_QUICK = 6, 2
NEW_TOKENS, NEW_TOKENS_QUICK = 96, 32  # EOS masked: every completion this long
BATCH = 4  # prompts per step, as configs/tiny/grpo.yaml


def child(threads: int, steps: int, new_tokens: int, seed: int) -> None:
    os.environ["TINYVR_BENCH_THREADS"] = str(threads)
    import benchlib as B
    import grpo_step as GS

    B.setup_torch(seed)
    from tinyvr.config import load_config

    model, processor = B.tiny_model(seed)
    cfg = load_config(B.ROOT / "configs/tiny/grpo.yaml", [f"rollout.max_new_tokens={new_tokens}", "run.progress=false"])
    prompts = B.prompt_ids(processor, BATCH)
    pixels = B.random_videos(model, BATCH, seed)
    step = GS.make_tinyvr_step(cfg, model, processor, prompts, pixels, seed=seed)
    step(list(range(BATCH)), 4)  # warm-up
    print("ready", flush=True)
    sys.stdin.readline()  # the parent's "go"
    t0 = time.time()
    tokens = sum(step(list(range(BATCH))) for _ in range(steps))
    print(json.dumps({"start": t0, "end": time.time(), "steps": steps, "threads": threads, "tokens": tokens}),
          flush=True)


def _side(children: list[tuple[int, int]], new_tokens: int) -> dict:
    """Start one child per (threads, steps), wait until all are ready, release them together."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent / "src"),
                                                       os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(t), str(s),
                               str(new_tokens), str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
             for i, (t, s) in enumerate(children)]
    for p in procs:
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"parallel_grpo child failed before its steps:\n{p.stderr.read()[-2000:]}")
    for p in procs:
        p.stdin.write("go\n"); p.stdin.flush()
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"parallel_grpo child failed:\n{err[-2000:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    wall = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    return {"wall_s": round(wall, 3), "children": reports}


def run(quick: bool = False) -> dict:
    import benchlib as B

    cores = B.threads()  # --threads of run.py, else all cores
    steps = STEPS_QUICK if quick else STEPS
    new_tokens = NEW_TOKENS_QUICK if quick else NEW_TOKENS
    sides = {"sequential": [(cores, 2 * steps)], "parallel": [(max(1, cores // 2), steps)] * 2}
    order = ["sequential", "parallel"] if quick else ["sequential", "parallel", "parallel", "sequential"]
    runs: dict[str, list[dict]] = {k: [] for k in sides}
    for name in order:
        runs[name].append(_side(sides[name], new_tokens))
    med = {k: sorted(r["wall_s"] for r in v)[len(v) // 2] for k, v in runs.items()}
    ratio = med["sequential"] / med["parallel"]
    print(f"parallel_grpo: two GRPO runs of {steps} steps ({BATCH} prompts x G=8 x {new_tokens} tokens): "
          f"one after the other at {cores} threads {med['sequential']:.1f} s, side by side at "
          f"{max(1, cores // 2)} thread(s) each {med['parallel']:.1f} s: {ratio:.2f}x")
    return {"ratio": round(ratio, 3), "target": TARGET, "passed": ratio >= TARGET,
            "tinyvr": {"wall_s": med["parallel"], "runs": runs["parallel"]},
            "baseline": {"wall_s": med["sequential"], "runs": runs["sequential"]},
            "setup": {"cores": cores, "steps_per_run": steps, "prompts": BATCH, "num_generations": 8,
                      "max_new_tokens": new_tokens},
            "method": "child processes, start-up and one warm-up step excluded; released together; wall "
                      "from the common start to the last child's end; medians over the repeats"}


if __name__ == "__main__":
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        sys.path[:0] = [str(HERE), str(HERE.parent / "src")]
        child(*(int(x) for x in sys.argv[i + 1: i + 5]))
    else:
        print(json.dumps(run("--quick" in sys.argv), indent=2))
