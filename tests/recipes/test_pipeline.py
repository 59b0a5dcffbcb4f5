"""The recipes for real, a few steps each: every stage, loss going down, exact resume."""

import json
import math

import pytest
import torch

from tests.recipes.conftest import stage_cfg
from tinyvr.recipes import run_stage
from tinyvr.utils.logging import read_jsonl

VOLATILE = ("time/", "tokens_per_s")  # wall-clock numbers differ between any two runs


def stable(rows):
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


def test_all_stages_end_to_end(tiny_data, tiny_model, tmp_path):
    """pretrain -> sft -> coldstart -> grpo -> eval, two steps each, from real .mp4 files."""
    prev = tiny_model
    for stage in ("pretrain", "sft", "coldstart"):
        cfg = stage_cfg(stage, tmp_path / stage, prev, tiny_data, "optim.max_steps=2", "optim.batch_size=2")
        prev = run_stage(cfg)
        assert (prev / "model.safetensors").is_file() and (prev / "processor_config.json").is_file()
        rows = read_jsonl(tmp_path / stage / "metrics.jsonl")
        assert [r["step"] for r in rows] == [1, 2]
        assert all(math.isfinite(r["loss"]) and r["target_tokens"] > 0 for r in rows)
    cfg = stage_cfg("grpo", tmp_path / "grpo", prev, tiny_data, "optim.max_steps=2", "optim.batch_size=2",
                    "rollout.num_generations=2", "rollout.greedy_generations=1", "rollout.max_new_tokens=12",
                    "run.rollout_log_every=1",
                    f"data.eval_file={tiny_data / 'test.jsonl'}", "data.eval_limit=4", "eval.max_new_tokens=8")
    final = run_stage(cfg)
    rows = read_jsonl(tmp_path / "grpo" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward", "reward/accuracy", "reward/format", "accuracy", "format_rate", "completion_length",
                "truncated_frac", "zero_std_frac", "kl", "entropy", "lr", "tokens_per_s", "time/rollout",
                "time/policy", "time/reference", "time/encode", "greedy_accuracy"):
        assert key in rows[0], key
    rollouts = read_jsonl(tmp_path / "grpo" / "rollouts.jsonl")
    assert len(rollouts) == 4 and all(len(r["completions"]) == 2 for r in rollouts)
    result = json.loads((tmp_path / "grpo" / "eval" / "test-reason" / "results.json").read_text())
    assert result["counts"]["total"] == 4 and 0.0 <= result["scores"]["Avg"] <= 1.0
    assert (final / "config.json").is_file()


def test_sft_lowers_the_loss(tiny_data, tiny_model, tmp_path):
    cfg = stage_cfg("sft", tmp_path, tiny_model, tiny_data, "optim.max_steps=8", "optim.batch_size=4",
                    "data.limit=4", "optim.lr=2e-3", "optim.scheduler=constant")
    run_stage(cfg)
    losses = [r["loss"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert len(losses) == 8
    assert losses[-1] < 0.7 * losses[0], losses


def test_grpo_resume_is_exact(tiny_data, tiny_model, tmp_path, monkeypatch):
    """A run killed after step 2 and resumed logs the same numbers as an uninterrupted run."""
    common = ["optim.max_steps=4", "optim.batch_size=2", "rollout.num_generations=3",
              "rollout.max_new_tokens=10", "run.save_every=2", "optim.lr=1e-3", "run.seed=5"]
    run_stage(stage_cfg("grpo", tmp_path / "full", tiny_model, tiny_data, *common))
    full = stable(read_jsonl(tmp_path / "full" / "metrics.jsonl"))

    from tinyvr.utils import logging as tv_logging

    real_log = tv_logging.MetricsLogger.log

    def dying_log(self, step, metrics):
        real_log(self, step, metrics)
        if step == 3:  # killed after logging step 3, before its checkpoint: resume redoes step 3
            raise KeyboardInterrupt

    monkeypatch.setattr(tv_logging.MetricsLogger, "log", dying_log)
    with pytest.raises(KeyboardInterrupt):
        run_stage(stage_cfg("grpo", tmp_path / "cut", tiny_model, tiny_data, *common))
    monkeypatch.setattr(tv_logging.MetricsLogger, "log", real_log)
    run_stage(stage_cfg("grpo", tmp_path / "cut", tiny_model, tiny_data, *common), resume=True)
    resumed = stable(read_jsonl(tmp_path / "cut" / "metrics.jsonl"))
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert resumed == full
    a = torch.load  # final weights equal too
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "cut" / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    del a


def test_grpo_family_probe_trains_on_the_kept_families_and_keeps_its_choice_on_resume(
        tiny_data, tiny_model, tmp_path, monkeypatch):
    """data.family_probe: GRPO draws its prompts only from the families the starting model answers
    above chance, and a resumed run reads back the choice it made rather than probing again (the
    probe runs before the checkpoint is restored, on the starting model)."""
    from tinyvr.recipes import grpo

    # the tiny split three times over (ids made unique): three prompts per family, so a family
    # answered right every time is above chance (p = 0.2**3)
    rows = [dict(json.loads(line), id=f"{json.loads(line)['id']}-{k}")
            for k in range(3) for line in (tiny_data / "rl.jsonl").read_text().splitlines()]
    rl = tmp_path / "rl.jsonl"
    rl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    family_of = {r["id"]: r["family"] for r in rows}
    first, other = rows[0]["family"], next(r["family"] for r in rows if r["family"] != rows[0]["family"])

    def knows(family):  # a scorer whose model answers every prompt of one family right, no other
        return lambda *a, **k: (lambda group: [float(r.columns["family"] == family) for r in group])

    common = ["optim.max_steps=4", "optim.batch_size=2", "rollout.num_generations=3", "rollout.max_new_tokens=8",
              "run.save_every=2", "run.rollout_log_every=1", "data.family_probe=16", f"data.train_file={rl}"]
    monkeypatch.setattr(grpo, "greedy_scorer", knows(first))
    from tinyvr.utils import logging as tv_logging

    real_log = tv_logging.MetricsLogger.log

    def dying_log(self, step, metrics):
        real_log(self, step, metrics)
        if step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(tv_logging.MetricsLogger, "log", dying_log)
    with pytest.raises(KeyboardInterrupt):
        run_stage(stage_cfg("grpo", tmp_path / "g", tiny_model, tiny_data, *common))
    probe = json.loads((tmp_path / "g" / "family_probe.json").read_text())
    assert probe["families"][first]["correct"] == probe["families"][first]["n"]
    assert all(s["correct"] == 0 for f, s in probe["families"].items() if f != first)
    monkeypatch.setattr(tv_logging.MetricsLogger, "log", real_log)
    monkeypatch.setattr(grpo, "greedy_scorer", knows(other))  # would choose another family if asked
    run_stage(stage_cfg("grpo", tmp_path / "g", tiny_model, tiny_data, *common), resume=True)
    assert json.loads((tmp_path / "g" / "family_probe.json").read_text()) == probe
    used = {family_of[r["prompt_id"]] for r in read_jsonl(tmp_path / "g" / "rollouts.jsonl")}
    assert probe["kept"] == [first] and not probe["fallback"]
    assert used == {first}
