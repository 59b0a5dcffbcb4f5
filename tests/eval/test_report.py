import json
import math

import pytest
from PIL import Image

from tinyvr.errors import DataError
from tinyvr.eval import metrics
from tinyvr.eval.report import load_run, render_report, smooth


def _metrics_lines(n, seed):
    rows = []
    for s in range(1, n + 1):
        acc = min(1.0, 0.3 + 0.01 * s + 0.05 * math.sin(s * seed))
        rows.append({"step": s, "reward": -0.5 + 2 * acc, "reward/accuracy": acc,
                     "reward/format": 0.5 + 0.005 * s, "accuracy": acc,
                     "completion_length": 80 + 2 * s + 10 * math.cos(s), "kl": 0.001 * s,
                     "zero_std_frac": max(0.0, 0.5 - 0.01 * s), "loss": 0.01 * math.sin(s),
                     "lr": 1e-6, "samples": ["<think>..."]})
    rows[5]["kl"] = "nan"  # the metrics logger writes non-finite values as strings
    return rows


def _card(stage, mode, task):
    return {"model": f"runs/demo/{stage}", "stage": stage, "task": task, "mode": mode, "num_frames": 16,
            "decoding": {"do_sample": False, "max_new_tokens": 256}, "seed": 0,
            "data": {f"/data/{task}.json": "ab" * 32}, "created": "2025-01-01T00:00:00+00:00"}


def _records(n_correct, n):
    return [{"id": str(i), "gt": "A", "pred": "A" if i < n_correct else None, "correct": i < n_correct,
             "category": {"task": "Action Sequence"}} for i in range(n)]


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    lines = [json.dumps(r) for r in _metrics_lines(40, 1.0)]
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 41, "rew')  # cut by a kill
    for stage, mode, task, scores, reasoning in [
        ("sft", "option", "mvbench", {"Action Sequence": 0.5, "Avg": 0.49}, None),
        ("grpo", "reason", "mvbench", {"Action Sequence": 0.55, "Avg": 0.524},
         {"mean_think_length": 212.4, "lazy_rate": 0.05, "aha_rate": 0.125, "revised_rate": 0.03,
          "examples": [{"kind": "aha", "text": "<think>The ball goes left. Wait, let me re-check: it goes "
                        "right.</think> <answer>B</answer>"}, "x" * 2000]}),
        ("grpo", "reason", "mlvu", {"plotQA": 0.5, "Avg": 0.475, "micro": 0.5}, None),
    ]:
        metrics.write_results(run / "eval" / stage / task / mode, scores, _card(stage, mode, task),
                              _records(3, 4), skipped=1 if task == "mlvu" else 0, reasoning=reasoning)
    (run / "results.json").write_text(json.dumps({
        "sft": {"test": {"option": 0.41, "reason": 0.3}},
        "grpo": {"test": {"reason": 0.55}, "test_heldout": {"reason": 0.5}},
    }))
    (run / "config.yaml").write_text("rl:\n  beta: 0.01\n")
    return run


def _check_png(path, min_bytes=10_000):
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > min_bytes  # an empty canvas compresses to a few KB
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.width >= 400 and im.height >= 250
        # a plot, not a blank image: many distinct colours
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20)) > 50


def test_single_run_report(run_dir, tmp_path):
    out = render_report([run_dir], tmp_path / "report" / "report.md",
                        extra_sections=[("Demo notes", "Trained for 40 steps on CPU.")],
                        lead_sections=[("Headline", "the study's table")])
    md = out.read_text()
    assert md.index("## Headline") < md.index("## Runs") < md.index("## Demo notes")
    # the paper's layout: models x answer type, benchmarks as columns (known ones first)
    assert "| Model | Answer type | MVBench | MLVU | test | test_heldout |" in md
    assert "| sft | Option | 49.0 | – | 41.0 | – |" in md
    assert "| grpo | Reason | 52.4 | 47.5 | 55.0 | 50.0 |" in md
    assert "| sft | Reason | – | – | 30.0 | – |" in md
    # per-category breakdown, counts, reasoning statistics, settings card, extra section, notes
    assert "| Model | Answer type | plotQA | Avg | micro |" in md
    assert "| grpo | Reason | MLVU | 4 | 3 | 1 | 0 | 1 | 0 |" in md
    assert "| Model | Benchmark | mean_think_length | lazy_rate | aha_rate | revised_rate |" in md
    assert "| grpo | MVBench | 212.4 | 5.0 % | 12.5 % | 3.0 % |" in md
    assert "> <think>The ball goes left. Wait, let me re-check" in md
    assert "x" * 600 + " …" in md and "x" * 601 not in md  # long examples are cut
    assert "| decoding.max_new_tokens | `256` |" in md and "beta: 0.01" in md
    assert "## Demo notes\n\nTrained for 40 steps on CPU." in md
    assert "1 line(s) that are not JSON objects were skipped" in md
    assert "| reward | reward/accuracy |" not in md  # sanity: curves are images, not tables
    assert "![training curves](report_training.png)" in md and "![evaluation](report_eval.png)" in md
    _check_png(out.parent / "report_training.png")
    _check_png(out.parent / "report_eval.png")


def test_compare_runs(run_dir, tmp_path):
    other = tmp_path / "runs" / "no_noise"
    other.mkdir()
    (other / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _metrics_lines(30, 2.0)))
    metrics.write_results(other / "eval" / "grpo" / "mvbench" / "reason", {"Avg": 0.5},
                          _card("grpo", "reason", "mvbench"), _records(2, 4))
    out = render_report([run_dir, other], tmp_path / "cmp.md")
    md = out.read_text()
    assert "| demo: grpo | Reason | 52.4 |" in md and "| no_noise: grpo | Reason | 50.0 |" in md
    assert "| demo | 40 | 40 |" in md and "| no_noise | 30 | 30 |" in md  # training summary
    _check_png(tmp_path / "cmp_training.png")
    _check_png(tmp_path / "cmp_eval.png")


def test_load_run_parts(run_dir):
    run = load_run(run_dir)
    assert len(run.metrics) == 40 and run.skipped_lines == 1
    assert {(r.label, r.mode, r.task) for r in run.results} == {
        ("sft", "option", "mvbench"), ("grpo", "reason", "mvbench"), ("grpo", "reason", "mlvu"),
        ("sft", "option", "test"), ("sft", "reason", "test"), ("grpo", "reason", "test"),
        ("grpo", "reason", "test_heldout")}
    with pytest.raises(DataError, match="run folder not found"):
        load_run(run_dir / "missing")


def test_empty_run_still_reports(tmp_path):
    out = render_report([tmp_path], tmp_path / "r.md")
    assert "no metrics.jsonl and no results.json" in out.read_text()
    assert not (tmp_path / "r_training.png").exists()
    assert render_report([tmp_path]) == tmp_path / "report.md"  # default: inside the first run


def test_smooth_is_debiased_ema():
    assert smooth([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])  # no pull towards 0
    s = smooth([0.0, 10.0], weight=0.5)
    assert s[0] == 0.0 and s[1] == pytest.approx(10 * 0.5 / 0.75)
    assert math.isnan(smooth([1.0, float("nan"), 1.0])[1])


def _grpo_metrics_rows(n):
    """metrics.jsonl lines with every key the GRPO recipe logs (recipes/grpo.py, step 7)."""
    rows = []
    for s in range(1, n + 1):
        acc = round(0.25 + 0.5 * s / n, 4)
        rows.append({"step": s, "reward": -1.0 + 2.5 * acc, "reward_std": 0.4, "reward/accuracy": acc,
                     "reward/format": 0.6, "accuracy": acc, "format_rate": 0.9,
                     "completion_length": 100.0 + s, "truncated_frac": 0.1, "zero_std_frac": 0.5 - 0.01 * s,
                     "lr": 1e-6, "tokens_per_s": 900.0, "bad_samples": 0, "time/rollout": 1.0,
                     "time/step": 2.0, "loss": 0.01, "pg_loss": 0.01, "ratio_mean": 1.0, "clip_fraction": 0.0,
                     "advantage_mean": 0.0, "kl": 0.002 * s, "kl_loss": 0.00002 * s, "entropy": 2.0,
                     "grad_norm": 0.5})
    return rows


def test_report_command_plots_reward_and_accuracy_over_steps(tmp_path, monkeypatch, capsys):
    """`tinyvr report RUN`: the training figure has the issue's curves (reward, accuracy, completion
    length, KL, zero-std fraction), accuracy drawn against the logged steps, and report.md shows it."""
    from tinyvr.cli import main
    from tinyvr.eval import report

    run = tmp_path / "grpo"
    run.mkdir()
    rows = _grpo_metrics_rows(12)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    figures = []
    real_figure = report._figure
    monkeypatch.setattr(report, "_figure", lambda *a: figures.append(real_figure(*a)) or figures[-1])

    assert main(["report", str(run)]) == 0
    assert f"wrote {run / 'report.md'}" in capsys.readouterr().out
    md = (run / "report.md").read_text()
    assert "![training curves](report_training.png)" in md
    _check_png(run / "report_training.png")

    panels = {ax.get_title(): ax for ax in figures[0].axes if ax.get_visible()}
    for key in ("reward", "accuracy", "completion_length", "kl", "zero_std_frac"):
        assert key in panels, f"no '{key}' curve in the training figure"
    raw = panels["accuracy"].get_lines()[0]  # faint raw line: one point per logged step
    assert list(raw.get_xdata()) == [float(r["step"]) for r in rows]
    assert list(raw.get_ydata()) == pytest.approx([r["accuracy"] for r in rows])
    assert list(panels["reward"].get_lines()[0].get_ydata()) == pytest.approx([r["reward"] for r in rows])
    # the summary table gives start -> end of the same curves (mean of the first / last step here)
    header = next(line for line in md.splitlines() if line.startswith("| Run | log lines"))
    for key in ("reward", "accuracy", "completion_length", "kl", "zero_std_frac"):
        assert f"{key} (start → end)" in header
    assert f"| grpo | 12 | 12 | {rows[0]['reward']:.4g} → {rows[-1]['reward']:.4g} | " \
           f"{rows[0]['accuracy']:.4g} → {rows[-1]['accuracy']:.4g} |" in md
