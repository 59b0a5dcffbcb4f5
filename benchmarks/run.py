"""Run tinyvr's side-by-side benchmarks: `python benchmarks/run.py [--quick] [--only NAME ...]`.

Each benchmark prints its ratio and writes runs/bench/<name>.json (name, ratio, target, passed,
raw timings, environment with the load average). The machine may be shared: the load average is
recorded before and after each benchmark.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))  # run from a checkout without installing

BENCHMARKS = ["rollout", "grpo_step", "video_decode", "foundation_step", "parallel_grpo", "memory"]


def _x(r):
    return "n/a" if r is None else f"{r:.2f}×"


def readme_rows(name: str, r: dict) -> list[str]:
    """Markdown rows (benchmark | tinyvr | baseline | ratio | target) for README's Performance table."""
    if r.get("error"):
        return [f"| {name} | failed: {r['error']} | | | |"]
    t, b = r.get("tinyvr", {}), r.get("baseline", {})
    if name == "rollout":
        s = r["setup"]
        return [f"| rollout, {s['prompts']} prompts × G={s['num_generations']} × {s['max_new_tokens']} tokens "
                f"| {t['tokens_per_s']:.0f} new tok/s | {b['tokens_per_s']:.0f} tok/s (8 sequential `generate` "
                f"per prompt) | {_x(r['ratio'])} | ≥ {r['target']:g}× |"]
    if name == "grpo_step":
        s, rows = r["setup"], []
        rows.append(f"| GRPO step, 1 prompt × G={s['num_generations']} × {s['max_new_tokens']} tokens "
                    f"| {t['median_wall_s']:.2f} s | {b['median_wall_s']:.2f} s (original step) "
                    f"| {_x(r['ratio'])} | ≥ {r['target']:g}× |")
        four = r.get("tinyvr_4_prompts")
        if four:
            rows.append(f"| GRPO step, 4 prompts per step (tiny config), per prompt "
                        f"| {four['median_wall_s'] / 4:.2f} s | {b['median_wall_s']:.2f} s (original step) "
                        f"| {_x(r.get('ratio_4_prompts_per_step'))} | — |")
        trl = r.get("trl", {})
        if trl.get("error"):
            rows.append(f"| GRPO step vs TRL `GRPOTrainer` | | not run: {trl['error']} | n/a | tinyvr faster |")
        elif trl:
            rows.append(f"| GRPO step vs TRL {trl['trl_version']} `GRPOTrainer`, both text only (same LLM, prompt, "
                        f"lengths), 1 prompt × G={s['num_generations']} | {trl['tinyvr_median_step_s']:.2f} s "
                        f"| {trl['median_step_s']:.2f} s | {_x(trl['ratio'])} | > 1× (tinyvr faster) |")
        return rows
    if name == "video_decode":
        s = r["setup"]
        rows = [f"| video decode, 16 of {s['seconds'] * s['fps']} frames ({s['size']}×{s['size']}, "
                f"{r['clip']['keyframes']} keyframes) | {t['frames_per_s']:.0f} frames/s "
                f"| {b['frames_per_s']:.0f} frames/s (decode all, float32) | {_x(r['ratio'])} | ≥ {r['target']:g}× |"]
        g = r.get("gop30")
        if g:
            rows.append(f"| video decode, same clip with a keyframe every 30 frames | {g['tinyvr']['frames_per_s']:.0f} "
                        f"frames/s | {g['baseline']['frames_per_s']:.0f} frames/s | {_x(g['ratio'])} | — |")
        return rows
    if name == "foundation_step":
        s, a = r["setup"], r["align"]
        return [f"| foundation language step, batch {s['batch']} ({s['mean_tokens']:.0f} tokens, "
                f"{s['mean_padded_positions']:.0f} padded positions) | {t['median_wall_s']:.2f} s (4 length slices) "
                f"| {b['median_wall_s']:.2f} s (one padded batch) | {_x(r['ratio'])} | ≥ {r['target']:g}× |",
                f"| foundation align video batch, {a['setup']['batch']} clips ({a['setup']['mean_tokens']:.0f} "
                f"tokens, {a['setup']['mean_padded_positions']:.0f} padded positions) "
                f"| {a['tinyvr']['median_wall_s']:.2f} s | {a['baseline']['median_wall_s']:.2f} s | {_x(a['ratio'])} | — |"]
    if name == "parallel_grpo":
        s = r["setup"]
        return [f"| two GRPO runs of {s['steps_per_run']} steps ({s['prompts']} prompts × G={s['num_generations']} × "
                f"{s['max_new_tokens']} tokens), `tinyvr demo --jobs 2` | {t['wall_s']:.1f} s (side by side, "
                f"{max(1, s['cores'] // 2)} thread(s) each) | {b['wall_s']:.1f} s (one after the other, {s['cores']} "
                f"threads) | {_x(r['ratio'])} | ≥ {r['target']:g}× |"]
    if name == "memory":
        def mb(x):
            if x.get("step_peak_rss_mb") is None:
                return f"{x['process_peak_rss_mb']:.0f} MB (process peak)"
            return f"{x['step_peak_rss_mb']:.0f} MB (+{x['step_increase_mb']:.0f} MB in the step)"
        return [f"| peak RSS of one tiny GRPO step (1 × G={t['num_generations']} × {t['max_new_tokens']}) "
                f"| {mb(t)} | {mb(b)} | — | — |"]
    return [f"| {name} | | | {_x(r.get('ratio'))} | {r.get('target')} |"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer tokens and repeats (a smoke run)")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=None, metavar="NAME",
                   help=f"run only these ({', '.join(BENCHMARKS)})")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default: all cores; on a machine shared with other jobs, "
                        "fewer threads than cores avoid OpenMP contention)")
    args = p.parse_args(argv)
    if args.threads:
        os.environ["TINYVR_BENCH_THREADS"] = str(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import benchlib as B

    names = args.only or BENCHMARKS
    summary, failed = [], []
    for name in names:
        print(f"== {name} (load average {os.getloadavg()[0]:.2f})", flush=True)
        t0 = time.perf_counter()
        load_before = list(os.getloadavg())
        try:
            result = importlib.import_module(name).run(quick=args.quick)
        except Exception as e:  # record the failure, keep going with the others
            traceback.print_exc()
            result = {"ratio": None, "target": None, "passed": False, "error": f"{type(e).__name__}: {e}"}
            failed.append(name)
        result["quick"] = args.quick
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        env = B.environment()
        env["loadavg_before"] = [round(x, 2) for x in load_before]
        result["env"] = env
        path = B.write_result(name, result)
        summary.append((name, result))
        print(f"   -> {path.relative_to(B.ROOT)} ({result['wall_s']} s)", flush=True)

    print("\nbenchmark      ratio     target    passed")
    for name, r in summary:
        tgt = "-" if r.get("target") is None else f">= {r['target']}x"
        print(f"{name:<14} {B.fmt_ratio(r.get('ratio')):<9} {tgt:<9} {r.get('passed')}")
    print("\nREADME rows:\n| benchmark | tinyvr | baseline | ratio | target |\n|---|---|---|---|---|")
    for name, r in summary:
        for row in readme_rows(name, r):
            print(row)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
