"""Accuracy helpers, the settings card, and the files an evaluation writes.

A *record* is one scored item, a JSON-friendly dict:

    {"id", "task", "video", "gt", "category": {...},      # from EvalItem.to_record()
     "pred": "B" | None,      # extracted letter; None = nothing usable in the output
     "correct": bool,         # pred == gt
     "guessed": bool,         # the letter came from the reference's random fallback (§8.1)
     "error": str | None,     # the item could not be run (e.g. video decode error)
     "output": str, ...}      # anything else is kept as is in predictions.jsonl

Failed, unparseable and guessed items all stay in every denominator (as wrong, or as whatever the
guess scored); `counts` in results.json makes each of them visible.
"""

from __future__ import annotations

from collections import Counter

import datetime as _dt
import functools
import json
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from tinyvr.utils.hashing import file_sha256


def record_correct(record: Mapping) -> bool:
    """`record['correct']`, or pred == gt when the evaluator did not store it."""
    if "correct" in record:
        return bool(record["correct"])
    gt = record.get("gt")
    return gt is not None and record.get("pred") == gt


def category_value(record: Mapping, key: str):
    """`record['category'][key]`, else `record[key]`; KeyError names the key when neither exists."""
    cat = record.get("category")
    if isinstance(cat, Mapping) and key in cat:
        return cat[key]
    if key in record:
        return record[key]
    raise KeyError(f"record {record.get('id', '?')!r} has no category '{key}'")


def correct_total(records: Iterable[Mapping]) -> tuple[int, int]:
    n = c = 0
    for r in records:
        n += 1
        c += record_correct(r)
    return c, n


def accuracy(records: Sequence[Mapping]) -> float:
    """Fraction of records that are correct; an empty list is an error, not 0."""
    c, n = correct_total(records)
    if n == 0:
        raise ValueError("accuracy of zero records is undefined")
    return c / n


def grouped_counts(records: Sequence[Mapping], key: str) -> dict[str, tuple[int, int]]:
    """{group: (correct, total)} in order of first appearance."""
    out: dict[str, list[int]] = {}
    for r in records:
        g = str(category_value(r, key))
        slot = out.setdefault(g, [0, 0])
        slot[0] += record_correct(r)
        slot[1] += 1
    return {g: (c, n) for g, (c, n) in out.items()}


def grouped_accuracy(records: Sequence[Mapping], key: str) -> dict[str, float]:
    """{group: accuracy} over the groups present in `records`, in order of first appearance."""
    return {g: c / n for g, (c, n) in grouped_counts(records, key).items()}


def macro_average(scores: Mapping[str, float]) -> float:
    if not scores:
        raise ValueError("macro average of zero groups is undefined")
    return sum(scores.values()) / len(scores)


# ---- settings card -------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """tinyvr version plus the git commit of the source tree, when it is a git checkout."""
    import tinyvr

    info: dict[str, Any] = {"tinyvr": tinyvr.__version__, "git_commit": None, "git_dirty": None}
    src = Path(tinyvr.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            status = subprocess.run(["git", "-C", str(src), "status", "--porcelain",
                                     "--untracked-files=no"], capture_output=True, text=True, timeout=10)
            info["git_dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass  # not a checkout, or no git: the version string is all we can say
    return info


def results_card(*, model: str | Path, task: str, mode: str, num_frames: int,
                 decoding: Mapping[str, Any], seed: int | None, data_files: Sequence[str | Path] = (),
                 frame_sampling: str | None = None, extra: Mapping[str, Any] | None = None) -> dict:
    """The settings a reader needs to trust (or reproduce) a score."""
    card = {
        "model": str(model),
        "task": task,
        "mode": mode,
        "num_frames": num_frames,
        "frame_sampling": frame_sampling,
        "decoding": dict(decoding),
        "seed": seed,
        # sha256 of the annotation files: two scores are comparable only on the same question set
        "data": {str(p): file_sha256(p) for p in data_files},
        "code": code_version(),
        "python": platform.python_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        card.update(extra)
    return card


# ---- files ---------------------------------------------------------------------------------------
def outcome_counts(records: Sequence[Mapping], *, skipped: int = 0) -> dict[str, int]:
    errors = sum(1 for r in records if r.get("error"))
    unparseable = sum(1 for r in records
                      if not r.get("error") and (r.get("pred") is None or r.get("unparseable")))
    guessed = sum(1 for r in records if r.get("guessed"))
    return {"total": len(records), "correct": correct_total(records)[0], "unparseable": unparseable,
            "guessed": guessed, "skipped": skipped, "errors": errors}


def answer_counts(records: Sequence[Mapping]) -> dict[str, int]:
    """How often each answer was given (parsed answers only): a model that gives one letter to
    most items is reading a prior, not the question, whatever its accuracy."""
    counts = Counter(str(r["pred"]) for r in records if r.get("pred") is not None and not r.get("error"))
    return dict(sorted(counts.items()))


def top_answer(answers: Mapping[str, int] | None) -> tuple[str, float] | None:
    """The most common answer of `answer_counts` and its share of all answers given (a tie goes to
    the later letter, so the choice is deterministic); None when nothing was answered."""
    if not answers:
        return None
    top = max(answers, key=lambda k: (answers[k], k))
    return top, answers[top] / sum(answers.values())


def sampling_scores(records: Sequence[Mapping], samples: int) -> dict[str, float]:
    """pass@1, majority of K and pass@K of records scored from K sampled answers each (`correct`
    is the majority's; `samples_correct` how many of the K were right). Errored items count wrong,
    as in the scores."""
    scored = [r for r in records if not r.get("error")]
    n = max(1, len(records))
    return {"samples": samples, "pass@1": sum(r["samples_correct"] for r in scored) / (n * samples),
            f"maj@{samples}": sum(bool(r["correct"]) for r in records) / n,
            f"pass@{samples}": sum(r["samples_correct"] > 0 for r in scored) / n}


def write_results(out_dir: str | Path, scores: Mapping[str, float], card: Mapping[str, Any],
                  records: Sequence[Mapping], *, task: str | None = None, mode: str | None = None,
                  label: str | None = None, skipped: int = 0,
                  reasoning: Mapping[str, Any] | None = None, sampling: Mapping[str, Any] | None = None) -> Path:
    """Write `results.json` and `predictions.jsonl` into `out_dir`; return the results path.

    `task`/`mode` default to the card's. `label` names the model or stage in reports (default: the
    card's `label`, `stage`, or the model path's last part). `skipped` counts items the task left
    out on purpose (`ItemList.num_skipped`, e.g. MMVU open-ended).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    task = task or card.get("task")
    mode = mode or card.get("mode")
    if not task or not mode:
        raise ValueError("write_results needs task and mode (as arguments or in the card)")
    if label is None:
        label = card.get("label") or card.get("stage") or Path(str(card.get("model", "model"))).name
    result = {"task": task, "mode": mode, "label": label, "scores": dict(scores), "card": dict(card),
              "counts": outcome_counts(records, skipped=skipped), "answers": answer_counts(records)}
    if reasoning is not None:
        result["reasoning"] = dict(reasoning)
    if sampling is not None:  # several samples per item: scores are their majority vote
        result["sampling"] = dict(sampling)
    path = out / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)  # a reader never sees half a file
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(dict(r), ensure_ascii=False, default=str) + "\n")
    return path
