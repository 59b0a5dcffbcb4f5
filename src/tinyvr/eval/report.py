"""Markdown report with PNG plots for one run or several runs compared.

What a run folder may hold (each part is optional):

    RUN/metrics.jsonl              training log, one JSON object per line with "step" and scalars
    RUN/eval/**/results.json       evaluation results as written by `metrics.write_results`
    RUN/results.json               either the same shape, or the demo summary
                                   {stage: {split: {mode: accuracy}}}, optionally with
                                   "reasoning": {stage: {stat: value, "examples": [...]}}
    RUN/config.yaml | config.json  the resolved run config (shown folded)

`render_report` composes the sections below; each piece (`load_run`, `plot_training`,
`plot_eval`, `results_table`, ...) is public so a caller can build a different report, and
`extra_sections` appends caller-written markdown. Scores are fractions in files and percent here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from tinyvr.errors import DataError
from tinyvr.eval.tasks import DISPLAY_NAMES as DISPLAY
from tinyvr.eval.tasks import TASKS

# Training metrics plotted when present, in this order (other "reward/..." components follow reward).
TRAINING_KEYS = ("reward", "reward/accuracy", "reward/format", "accuracy", "completion_length", "kl",
                 "zero_std_frac", "loss", "lr")
SUMMARY_KEYS = ("reward", "accuracy", "completion_length", "kl", "zero_std_frac")
REASONING_KEYS = ("mean_think_length", "lazy_rate", "aha_rate", "revised_rate")
BENCHMARK_ORDER = tuple(DISPLAY)  # the paper's column order, then anything else by appearance
CONFIG_FILES = ("config.yaml", "config.yml", "config.json")
_EXAMPLE_CHARS = 600  # excerpt length of a reasoning example in the report


@dataclass
class EvalResult:
    """One (model, mode, benchmark) score."""

    run: str
    label: str  # model or stage name
    mode: str
    task: str
    headline: float | None  # the benchmark's main score (fraction)
    scores: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    reasoning: dict[str, Any] | None = None
    path: Path | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.run, self.label, self.mode)


@dataclass
class RunData:
    name: str
    path: Path
    metrics: list[dict] = field(default_factory=list)
    skipped_lines: int = 0  # metrics.jsonl lines that were not JSON objects (e.g. cut by a kill)
    results: list[EvalResult] = field(default_factory=list)
    config_text: str | None = None
    config_name: str | None = None
    notes: list[str] = field(default_factory=list)


# ---- reading -------------------------------------------------------------------------------------
def _number(v) -> float | None:
    """A plottable float: numbers, and the 'nan'/'inf' strings the metrics logger writes."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and v.lower() in ("nan", "inf", "-inf"):
        return float(v)
    return None


def load_metrics(path: Path) -> tuple[list[dict], int]:
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def _headline(task: str, scores: Mapping[str, Any]) -> float | None:
    keys = [TASKS[task].headline] if task in TASKS else []
    for key in keys + ["Avg", "overall", "accuracy"]:
        if isinstance(scores.get(key), (int, float)):
            return float(scores[key])
    nums = [v for v in scores.values() if isinstance(v, (int, float))]
    return float(nums[0]) if len(nums) == 1 else None


def _is_demo_summary(data: Mapping) -> bool:
    """{stage: {split: {mode: number}}} (ignoring the 'reasoning'/'card' side keys)."""
    stages = {k: v for k, v in data.items() if k not in ("reasoning", "card")}
    if not stages:
        return False
    for splits in stages.values():
        if not isinstance(splits, Mapping):
            return False
        for modes in splits.values():
            if not isinstance(modes, Mapping) or not all(_number(x) is not None for x in modes.values()):
                return False
    return True


def _result_from_file(run: str, path: Path, data: Mapping) -> EvalResult:
    card = data.get("card") if isinstance(data.get("card"), Mapping) else {}
    label = data.get("label") or card.get("label") or card.get("stage")
    if not label:
        label = Path(str(card["model"])).name if card.get("model") else path.parent.name
    scores = {k: v for k, v in data.get("scores", {}).items()}
    task = str(data["task"])
    return EvalResult(run=run, label=str(label), mode=str(data.get("mode", "?")), task=task,
                      headline=_headline(task, scores), scores=scores,
                      counts=dict(data.get("counts") or {}), card=dict(card),
                      reasoning=data.get("reasoning"), path=path)


def results_from_demo(run: str, path: Path, data: Mapping) -> list[EvalResult]:
    reasoning = data.get("reasoning") if isinstance(data.get("reasoning"), Mapping) else {}
    card = data.get("card") if isinstance(data.get("card"), Mapping) else {}
    out = []
    for stage, splits in data.items():
        if stage in ("reasoning", "card"):
            continue
        for split, modes in splits.items():
            for mode, acc in modes.items():
                out.append(EvalResult(run=run, label=str(stage), mode=str(mode), task=str(split),
                                      headline=_number(acc), scores={"Avg": _number(acc)},
                                      card=dict(card), path=path))
    for stage, stats in reasoning.items():
        if isinstance(stats, Mapping):
            # attached to the stage's first result so the reasoning table can name it
            first = next((r for r in out if r.label == str(stage)), None)
            if first is None:
                first = EvalResult(run=run, label=str(stage), mode="reason", task="-", headline=None,
                                   path=path)
                out.append(first)
            first.reasoning = dict(stats)
    return out


def load_run(run_dir: str | Path, name: str | None = None) -> RunData:
    """Everything the report reads from one run folder."""
    path = Path(run_dir)
    if not path.is_dir():
        raise DataError(path, "run folder not found")
    run = RunData(name=name or path.name, path=path)
    mfile = path / "metrics.jsonl"
    if mfile.is_file():
        run.metrics, run.skipped_lines = load_metrics(mfile)
        if run.skipped_lines:
            run.notes.append(f"{mfile}: {run.skipped_lines} line(s) that are not JSON objects were skipped")
    files = ([path / "results.json"] if (path / "results.json").is_file() else [])
    files += sorted((path / "eval").glob("**/results.json")) if (path / "eval").is_dir() else []
    seen: dict[tuple, EvalResult] = {}
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f, f"invalid JSON: {e.msg}") from e
        if not isinstance(data, Mapping):
            raise DataError(f, "expected a JSON object")
        if "scores" in data and "task" in data:
            found = [_result_from_file(run.name, f, data)]
        elif _is_demo_summary(data):
            found = results_from_demo(run.name, f, data)
        else:
            run.notes.append(f"{f}: not a results file this report knows; ignored")
            continue
        for r in found:
            k = (r.label, r.mode, r.task)
            if k in seen:
                run.notes.append(f"{r.label}/{r.mode}/{r.task}: found in {seen[k].path} and {f}; "
                                 f"the report uses {f}")
                run.results.remove(seen[k])
            seen[k] = r
            run.results.append(r)
    for c in CONFIG_FILES:
        if (path / c).is_file():
            run.config_name, run.config_text = c, (path / c).read_text(encoding="utf-8")
            break
    return run


def _run_names(paths: Sequence[Path]) -> list[str]:
    names = [p.name for p in paths]
    if len(set(names)) < len(names):  # same folder name in different places: add the parent
        names = [f"{p.parent.name}/{p.name}" for p in paths]
    return names


# ---- numbers -------------------------------------------------------------------------------------
def smooth(values: Sequence[float], weight: float = 0.8) -> list[float]:
    """Debiased exponential moving average (TensorBoard's smoothing); NaNs are carried over."""
    out, avg, norm = [], 0.0, 0.0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        avg = weight * avg + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(avg / norm)
    return out


def series(rows: Sequence[Mapping], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one metric; rows without a 'step' count by position."""
    xs, ys = [], []
    for i, row in enumerate(rows):
        y = _number(row.get(key))
        if y is None:
            continue
        x = _number(row.get("step"))
        xs.append(x if x is not None else float(i))
        ys.append(y)
    return xs, ys


def training_keys(runs: Sequence[RunData]) -> list[str]:
    present = set()
    for run in runs:
        for row in run.metrics:
            present.update(k for k, v in row.items() if k != "step" and _number(v) is not None)
    keys = [k for k in TRAINING_KEYS if k in present]
    extra_rewards = sorted(k for k in present if k.startswith("reward/") and k not in keys)
    if "reward" in keys:
        i = keys.index("reward") + 1
        keys[i:i] = extra_rewards
    else:
        keys = extra_rewards + keys
    return keys


def _pct(v: float | None, digits: int = 1) -> str:
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "–"
    return f"{100 * v:.{digits}f}"


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _answer_type(mode: str) -> str:
    return {"option": "Option", "reason": "Reason"}.get(mode, mode)


def _benchmarks(results: Sequence[EvalResult]) -> list[str]:
    tasks = []
    for r in results:
        if r.task not in tasks and r.headline is not None:
            tasks.append(r.task)
    known = [t for t in BENCHMARK_ORDER if t in tasks]
    return known + [t for t in tasks if t not in known]


def _row_keys(results: Sequence[EvalResult]) -> list[tuple[str, str, str]]:
    keys = []
    for r in results:
        if r.key not in keys:
            keys.append(r.key)
    return keys


def _model_name(key: tuple[str, str, str], multi_run: bool) -> str:
    run, label, _ = key
    return f"{run}: {label}" if multi_run else label


# ---- plots ---------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas for savefig

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def plot_training(runs: Sequence[RunData], path: Path, *, keys: Sequence[str] | None = None,
                  smoothing: float = 0.8) -> Path | None:
    """One panel per metric; per run a faint raw line and a solid smoothed line. None if no data."""
    keys = list(keys) if keys is not None else training_keys(runs)
    runs = [r for r in runs if r.metrics]
    if not keys or not runs:
        return None
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = _figure(4.6 * ncols, 3.0 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = _colors(len(runs))
    for ax, key in zip(axes, keys):
        for run, color in zip(runs, colors):
            xs, ys = series(run.metrics, key)
            if not xs:
                continue
            ax.plot(xs, ys, color=color, alpha=0.3, linewidth=1)
            ax.plot(xs, smooth(ys, smoothing) if len(ys) >= 5 else ys, color=color, linewidth=1.8,
                    label=run.name)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    if len(runs) > 1:  # one legend for every run (the first panel may hold only some of them)
        seen = {}
        for ax in axes[: len(keys)]:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(label, handle)
        axes[0].legend(list(seen.values()), list(seen.keys()), fontsize=8)
    fig.suptitle(f"training curves (faint: raw, solid: EMA {smoothing})", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_eval(results: Sequence[EvalResult], path: Path) -> Path | None:
    """Grouped bars: one group per benchmark, one bar per (run, model, mode). None if no scores."""
    benches = _benchmarks(results)
    rows = [k for k in _row_keys(results)
            if any(r.key == k and r.headline is not None for r in results)]
    if not benches or not rows:
        return None
    multi_run = len({k[0] for k in rows}) > 1
    value = {(r.key, r.task): r.headline for r in results if r.headline is not None}
    width = 0.8 / len(rows)
    fig = _figure(max(5.0, 1.2 + len(benches) * (0.5 + 0.35 * len(rows))), 3.8)
    ax = fig.add_subplot()
    for j, (key, color) in enumerate(zip(rows, _colors(len(rows)))):
        xs, hs = [], []
        for i, b in enumerate(benches):
            v = value.get((key, b))
            if v is not None and math.isfinite(v):
                xs.append(i - 0.4 + width * (j + 0.5))
                hs.append(100 * v)
        label = f"{_model_name(key, multi_run)} ({_answer_type(key[2])})"
        bars = ax.bar(xs, hs, width=width * 0.95, color=color, label=label,
                      hatch="//" if key[2] == "option" else None, edgecolor="white")
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(range(len(benches)), [DISPLAY.get(b, b) for b in benches])
    ax.set_ylabel("accuracy (%)")
    top = max((100 * v for v in value.values() if v is not None and math.isfinite(v)), default=100)
    ax.set_ylim(0, max(10.0, min(100.0, top * 1.15 + 2)))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("evaluation accuracy")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# ---- markdown sections ---------------------------------------------------------------------------
def results_table(results: Sequence[EvalResult]) -> str:
    """The paper's layout (§9): one row per model and answer type, one column per benchmark."""
    benches = _benchmarks(results)
    keys = _row_keys([r for r in results if r.headline is not None])
    if not benches or not keys:
        return "_No evaluation results._"
    multi_run = len({k[0] for k in keys}) > 1
    value = {(r.key, r.task): r.headline for r in results}
    rows = [[_model_name(k, multi_run), _answer_type(k[2])] + [_pct(value.get((k, b))) for b in benches]
            for k in keys]
    return _table(["Model", "Answer type"] + [DISPLAY.get(b, b) for b in benches], rows)


def breakdown_tables(results: Sequence[EvalResult]) -> str:
    """Per benchmark, every score the task reports (per task / duration / family)."""
    parts = []
    multi_run = len({r.run for r in results}) > 1
    for b in _benchmarks(results):
        rs = [r for r in results if r.task == b and len(r.scores) > 1]
        if not rs:
            continue
        cols: list[str] = []
        for r in rs:
            cols += [c for c in r.scores if c not in cols]
        rows = [[_model_name(r.key, multi_run), _answer_type(r.mode)] + [_pct(r.scores.get(c)) for c in cols]
                for r in rs]
        parts.append(f"**{DISPLAY.get(b, b)}**\n\n" + _table(["Model", "Answer type"] + cols, rows))
    return "\n\n".join(parts)


def counts_table(results: Sequence[EvalResult]) -> str:
    rs = [r for r in results if r.counts]
    if not rs:
        return ""
    cols = ["total", "correct", "unparseable", "guessed", "skipped", "errors"]
    multi_run = len({r.run for r in rs}) > 1
    rows = [[_model_name(r.key, multi_run), _answer_type(r.mode), DISPLAY.get(r.task, r.task)]
            + [r.counts.get(c, "–") for c in cols] for r in rs]
    return _table(["Model", "Answer type", "Benchmark"] + cols, rows)


def reasoning_section(results: Sequence[EvalResult]) -> str:
    rs = [r for r in results if r.reasoning]
    if not rs:
        return ""
    cols = [k for k in REASONING_KEYS if any(k in r.reasoning for r in rs)]
    for r in rs:
        cols += [k for k, v in r.reasoning.items()
                 if k not in cols and k != "examples" and _number(v) is not None]
    multi_run = len({r.run for r in rs}) > 1

    def show(k, v):
        n = _number(v)
        if n is None:
            return "–"
        return _pct(n) + " %" if k.endswith(("_rate", "_frac")) else f"{n:.1f}"

    rows = [[_model_name(r.key, multi_run), DISPLAY.get(r.task, r.task)]
            + [show(k, r.reasoning.get(k)) for k in cols] for r in rs]
    out = [_table(["Model", "Benchmark"] + cols, rows)]
    for r in rs:
        examples = r.reasoning.get("examples") or []
        if not examples:
            continue
        out.append(f"Examples — {_model_name(r.key, multi_run)}, {DISPLAY.get(r.task, r.task)}:")
        for ex in examples:
            if isinstance(ex, Mapping):
                kind = ex.get("kind") or ex.get("type") or ""
                text = str(ex.get("text") or ex.get("completion") or ex.get("output") or "")
            else:
                kind, text = "", str(ex)
            if len(text) > _EXAMPLE_CHARS:
                text = text[:_EXAMPLE_CHARS] + " …"
            quoted = "\n".join("> " + line for line in text.splitlines() or [""])
            out.append((f"*{kind}*\n" if kind else "") + quoted)
    return "\n\n".join(out)


def _flatten(d: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            items += _flatten(v, name + ".")
        else:
            items.append((name, v))
    return items


def settings_section(results: Sequence[EvalResult]) -> str:
    """Each distinct settings card once, with the results that used it."""
    groups: list[tuple[dict, list[EvalResult]]] = []
    for r in results:
        if not r.card:
            continue
        # cards differ per benchmark only by task/data/time: those are shown per result instead
        core = {k: v for k, v in r.card.items() if k not in ("task", "data", "created")}
        for c, members in groups:
            if c == core:
                members.append(r)
                break
        else:
            groups.append((core, [r]))
    parts = []
    for i, (core, members) in enumerate(groups, 1):
        used = ", ".join(f"{r.label}/{r.mode}/{r.task}" for r in members)
        rows = [(k, f"`{_fmt(v)}`") for k, v in _flatten(core)]
        for r in members:
            for f, sha in (r.card.get("data") or {}).items():
                rows.append((f"data ({r.task})", f"`{Path(f).name}` sha256 `{str(sha)[:16]}…`"))
            if r.card.get("created"):
                rows.append((f"created ({r.task}, {r.mode})", r.card["created"]))
        parts.append(f"**Card {i}** — used by {used}\n\n" + _table(["setting", "value"], rows))
    return "\n\n".join(parts)


def training_summary(runs: Sequence[RunData]) -> str:
    """Start and end of the main curves (mean of the first / last 10% of logged steps)."""
    keys = [k for k in SUMMARY_KEYS if any(series(r.metrics, k)[0] for r in runs)]
    if not keys:
        return ""
    rows = []
    for run in runs:
        if not run.metrics:
            continue
        steps = [s for s in (_number(r.get("step")) for r in run.metrics) if s is not None]
        cells = [run.name, len(run.metrics), int(max(steps)) if steps else "–"]
        for k in keys:
            _, ys = series(run.metrics, k)
            ys = [y for y in ys if math.isfinite(y)]
            if not ys:
                cells.append("–")
                continue
            w = max(1, len(ys) // 10)
            cells.append(f"{_fmt(sum(ys[:w]) / w)} → {_fmt(sum(ys[-w:]) / w)}")
        rows.append(cells)
    return _table(["Run", "log lines", "last step"] + [f"{k} (start → end)" for k in keys], rows)


def render_report(run_dirs: Sequence[str | Path], out_path: str | Path | None = None, *,
                  title: str = "tinyvr report", extra_sections: Sequence[tuple[str, str]] = (),
                  lead_sections: Sequence[tuple[str, str]] = (), smoothing: float = 0.8) -> Path:
    """Write a markdown report (and PNG plots beside it) for one or more runs; return its path.

    `out_path` defaults to `report.md` in the first run folder. `extra_sections`: (title,
    markdown) pairs appended after the built-in sections (before the notes); `lead_sections`
    go first, before the run list (a study's headline table).
    """
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise ValueError("render_report needs at least one run folder")
    runs = [load_run(p, name) for p, name in zip(paths, _run_names(paths))]
    out = Path(out_path) if out_path is not None else paths[0] / "report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = [r for run in runs for r in run.results]
    # one row order for every section: first appearance of (run, model, mode), then benchmark order
    rows, benches = _row_keys(results), _benchmarks(results)
    results.sort(key=lambda r: (rows.index(r.key),
                                benches.index(r.task) if r.task in benches else len(benches)))

    sections: list[tuple[str, str]] = list(lead_sections)
    sections.append(("Runs", _table(["Run", "folder", "training log lines", "eval results"],
                                    [[r.name, f"`{r.path}`", len(r.metrics), len(r.results)]
                                     for r in runs])))
    if any(r.metrics for r in runs):
        img = plot_training(runs, out.with_name(f"{out.stem}_training.png"), smoothing=smoothing)
        body = training_summary(runs)
        if img is not None:
            body = f"![training curves]({img.name})\n\n" + body
        sections.append(("Training", body))
    if results:
        img = plot_eval(results, out.with_name(f"{out.stem}_eval.png"))
        body = ("Accuracy (%) by model and answer type; Option = answer letter only, "
                "Reason = `<think>`/`<answer>` output.\n\n" + results_table(results))
        if img is not None:
            body += f"\n\n![evaluation]({img.name})"
        sections.append(("Evaluation", body))
        if breakdown := breakdown_tables(results):
            sections.append(("Per-category scores", breakdown))
        if counts := counts_table(results):
            sections.append(("Item counts",
                             "Every item stays in the denominator: unparseable answers and errors "
                             "count as wrong, guessed answers count as whatever the guess scored.\n\n"
                             + counts))
    if reasoning := reasoning_section(results):
        sections.append(("Reasoning statistics", reasoning))
    settings = settings_section(results)
    configs = [f"<details><summary>{r.name}: {r.config_name}</summary>\n\n```\n{r.config_text.rstrip()}\n"
               f"```\n</details>" for r in runs if r.config_text]
    if settings or configs:
        sections.append(("Settings", "\n\n".join([s for s in [settings] if s] + configs)))
    notes = [n for r in runs for n in r.notes]
    if not any(r.metrics for r in runs) and not results:
        notes.insert(0, "no metrics.jsonl and no results.json found in the run folder(s)")
    sections += [(t, m) for t, m in extra_sections]
    if notes:
        sections.append(("Notes", "\n".join(f"- {n}" for n in notes)))

    text = f"# {title}\n\n" + "\n\n".join(f"## {t}\n\n{m.strip()}" for t, m in sections) + "\n"
    out.write_text(text, encoding="utf-8")
    return out
