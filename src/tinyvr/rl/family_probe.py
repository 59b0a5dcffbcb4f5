"""Which question families GRPO trains on: those the starting policy already answers above chance.

GRPO learns from the differences between the rewards of a prompt's completions. On a family the
model answers at chance those differences say nothing about the video, only about reward shaping
(the length term favours the shortest option check), so its prompts teach a letter preference
instead (docs/tiny-study.md, item 30). Before training, the recipe answers `data.family_probe`
prompts of every family greedily with the starting model and keeps the families whose accuracy
beats chance in a one-sided binomial test at level `ALPHA`.

The statistics here take an `answer` function (rows -> accuracies in [0, 1]) so they can be tested
without a model; `tinyvr.recipes.grpo` passes one that decodes with the rollout engine.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from tinyvr.data.datasets import GrpoRow
from tinyvr.errors import ConfigError
from tinyvr.rl.rewards import option_letters

ALPHA = 0.05


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    return min(1.0, sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def chance_of(row: GrpoRow) -> float:
    """Accuracy of a uniform guess: one over the number of options (the `options` column, else the
    option lines of the problem)."""
    return 1.0 / len(option_letters(row.columns.get("options") or row.problem))


def probe_sample(rows: Sequence[GrpoRow], per_family: int, seed: int) -> dict[str, list[GrpoRow]]:
    """Up to `per_family` rows of every family, drawn with `seed` (families sorted by name)."""
    by_family: dict[str, list[GrpoRow]] = {}
    for r in rows:
        if "family" not in r.columns:
            raise ConfigError(f"data.family_probe: row {r.index + 1} has no 'family' column")
        by_family.setdefault(str(r.columns["family"]), []).append(r)
    rng = random.Random(seed)
    return {f: rng.sample(group, min(per_family, len(group))) for f, group in sorted(by_family.items())}


def score_families(sample: dict[str, list[GrpoRow]], accuracies: dict[str, list[float | None]],
                   alpha: float = ALPHA) -> dict:
    """Per family: n, correct, accuracy, chance, one-sided p-value and whether it is kept.

    `accuracies[family][i]` is row i's score (1.0 right, 0.0 wrong) or None for a row that could not
    be scored (its video does not decode): such rows are left out. Returns {"families": {name:
    {...}}, "kept": [names], "fallback": bool, "alpha": alpha}. When no family beats chance, all are
    kept (`fallback`): the probe then says nothing the run could act on.
    """
    out = {}
    for fam, rows in sample.items():
        scored = [(r, a) for r, a in zip(rows, accuracies.get(fam, [])) if a is not None]
        n, correct = len(scored), int(round(sum(a for _, a in scored)))
        chance = sum(chance_of(r) for r, _ in scored) / n if n else 0.0
        p = binomial_tail(correct, n, chance) if n else 1.0
        out[fam] = {"n": n, "correct": correct, "accuracy": correct / n if n else 0.0,
                    "chance": round(chance, 4), "p_value": p, "kept": bool(n) and p < alpha}
    kept = [f for f, s in out.items() if s["kept"]]
    fallback = not kept
    if fallback:
        kept = list(out)
    return {"families": out, "kept": kept, "fallback": fallback, "alpha": alpha}


def probe_families(rows: Sequence[GrpoRow], answer: Callable[[list[GrpoRow]], list[float | None]], *,
                   per_family: int, seed: int, alpha: float = ALPHA) -> dict:
    """Score `per_family` rows of each family with `answer` and choose the families to train on.

    `answer(rows)` returns one score per row: 1.0 right, 0.0 wrong, None when the row could not be
    answered (a video that does not decode). The result is `score_families`' dict; its "kept" list
    goes to `tinyvr.data.datasets.select_families`, like `data.families`.
    """
    if per_family < 1:
        raise ConfigError(f"data.family_probe must be >= 1 to probe, got {per_family}")
    sample = probe_sample(rows, per_family, seed)
    accuracies = {fam: list(answer(group)) for fam, group in sample.items()}
    for fam, acc in accuracies.items():
        if len(acc) != len(sample[fam]):
            raise ValueError(f"answer() returned {len(acc)} accuracies for {len(sample[fam])} rows of {fam!r}")
    return score_families(sample, accuracies, alpha)
