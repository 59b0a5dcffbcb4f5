"""The family probe: which question families GRPO trains on (tinyvr.rl.family_probe)."""

import math
import random
from pathlib import Path

import pytest

from tinyvr.data.datasets import GrpoRow, select_families
from tinyvr.errors import ConfigError
from tinyvr.rl.family_probe import binomial_tail, chance_of, probe_families, probe_sample, score_families


def _row(i, family, n_options=5, answer="A"):
    opts = [f"opt{k}" for k in range(n_options)]
    return GrpoRow(index=i, problem="Q?\nOptions:\n" + "\n".join(f"{'ABCDEFG'[k]}. {o}" for k, o in enumerate(opts)),
                   solution=f"<answer>{answer}</answer>", video_path=Path(f"v{i}.mp4"),
                   columns={"family": family, "options": opts, "answer": answer})


def test_binomial_tail_matches_a_direct_sum_and_its_edges():
    assert binomial_tail(0, 10, 0.3) == 1.0
    assert binomial_tail(11, 10, 0.3) == 0.0
    assert binomial_tail(10, 10, 0.5) == pytest.approx(0.5 ** 10)
    # P(X >= 19) for Bin(64, 0.2): the threshold a 64-prompt probe needs at 5 options
    direct = sum(math.comb(64, i) * 0.2 ** i * 0.8 ** (64 - i) for i in range(19, 65))
    assert binomial_tail(19, 64, 0.2) == pytest.approx(direct)
    assert binomial_tail(19, 64, 0.2) < 0.05 < binomial_tail(17, 64, 0.2)


def test_chance_counts_the_options_column_else_the_option_lines():
    assert chance_of(_row(0, "a", n_options=4)) == pytest.approx(0.25)
    r = _row(1, "a", n_options=3)
    no_column = GrpoRow(index=1, problem=r.problem, solution=r.solution, video_path=r.video_path,
                        columns={"family": "a"})
    assert chance_of(no_column) == pytest.approx(1 / 3)


def test_the_sample_takes_up_to_n_rows_per_family_and_depends_on_the_seed():
    rows = [_row(i, "color" if i % 3 else "count") for i in range(90)]
    a, b, c = probe_sample(rows, 10, seed=0), probe_sample(rows, 10, seed=0), probe_sample(rows, 10, seed=1)
    assert sorted(a) == ["color", "count"] and all(len(v) == 10 for v in a.values())
    assert all(r.columns["family"] == fam for fam, v in a.items() for r in v)
    assert [r.index for r in a["color"]] == [r.index for r in b["color"]]
    assert [r.index for r in a["color"]] != [r.index for r in c["color"]]
    assert len(probe_sample(rows, 1000, seed=0)["count"]) == 30  # a small family: all of its rows
    with pytest.raises(ConfigError, match="row 2 has no 'family' column"):
        probe_sample(rows[:1] + [GrpoRow(1, "Q", "<answer>A</answer>", Path("x.mp4"), {})], 5, seed=0)


def test_families_above_chance_are_kept_and_the_others_dropped():
    rows = [_row(i, fam) for i, fam in enumerate(["sharp"] * 64 + ["blind"] * 64 + ["edge"] * 64)]
    rng = random.Random(0)
    # sharp answers 45%, blind at chance (20%), edge 25% (not separable from chance with 64 prompts)
    rate = {"sharp": 0.45, "blind": 0.2, "edge": 0.25}

    def answer(group):
        k = round(rate[group[0].columns["family"]] * len(group))
        scores = [1.0] * k + [0.0] * (len(group) - k)
        rng.shuffle(scores)
        return scores

    result = probe_families(rows, answer, per_family=64, seed=0)
    assert result["kept"] == ["sharp"] and not result["fallback"]
    fams = result["families"]
    assert fams["sharp"]["correct"] == 29 and fams["sharp"]["n"] == 64 and fams["sharp"]["chance"] == 0.2
    assert fams["sharp"]["p_value"] < 0.05 <= fams["edge"]["p_value"] < fams["blind"]["p_value"]
    assert [r.columns["family"] for r in select_families(rows, result["kept"], "rl.jsonl")] == ["sharp"] * 64


def test_no_family_above_chance_keeps_them_all_and_says_so():
    rows = [_row(i, fam) for i, fam in enumerate(["a"] * 20 + ["b"] * 20)]
    result = probe_families(rows, lambda group: [0.0] * len(group), per_family=20, seed=0)
    assert result["fallback"] and result["kept"] == ["a", "b"]
    assert len(select_families(rows, result["kept"], "rl.jsonl")) == 40


def test_rows_that_could_not_be_answered_are_left_out_of_the_count():
    sample = {"a": [_row(i, "a") for i in range(10)]}
    result = score_families(sample, {"a": [1.0] * 6 + [None] * 4})
    assert result["families"]["a"]["n"] == 6 and result["families"]["a"]["accuracy"] == 1.0
    assert result["kept"] == ["a"]
    empty = score_families(sample, {"a": [None] * 10})
    assert empty["families"]["a"]["n"] == 0 and not empty["families"]["a"]["kept"] and empty["fallback"]


def test_an_answer_function_that_loses_rows_is_an_error():
    rows = [_row(i, "a") for i in range(8)]
    with pytest.raises(ValueError, match="returned 3 accuracies for 8 rows"):
        probe_families(rows, lambda group: [1.0] * 3, per_family=8, seed=0)
    with pytest.raises(ConfigError, match="family_probe must be >= 1"):
        probe_families(rows, lambda group: [1.0] * len(group), per_family=0, seed=0)
