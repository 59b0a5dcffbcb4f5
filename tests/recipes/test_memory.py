"""`tinyvr estimate-memory`: the 3.6B recipe's numbers move in the sensible directions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyvr.cli import main
from tinyvr.config import load_config
from tinyvr.recipes.memory import GB, estimate_memory, estimate_memory_cli, resolve_model_config

ROOT = Path(__file__).resolve().parents[2]
R1 = ROOT / "configs" / "tinyllava_video_r1" / "grpo.yaml"


@pytest.fixture(scope="module")
def model():
    """(model config, parameter counts) of the published recipe, counted once (meta device)."""
    from tinyvr.model import count_parameters

    config, source = resolve_model_config(load_config(R1))
    return config, count_parameters(config)


def peak(model, overrides=(), **kw) -> float:
    config, params = model
    return estimate_memory(load_config(R1, list(overrides)), model_config=config, params=params, **kw).peak


def test_parameter_count_is_the_published_model(model):
    config, params = model
    assert params["total"] == pytest.approx(3.63e9, rel=0.01)
    assert params["total"] == params["vision_tower"] + params["connector"] + params["language_model"]
    assert config.text_config.hidden_size == 2048 and config.text_config.num_hidden_layers == 36
    assert config.num_queries == 512


def test_missing_checkpoint_falls_back_to_the_published_preset():
    cfg = load_config(R1)
    if (Path(cfg.model.init_from) / "config.json").exists():
        pytest.skip("the cold-start checkpoint is present: its own config is used")
    _, source = resolve_model_config(cfg)
    assert "tinyllava-video-3b" in source


def test_more_gpus_under_zero3_need_less_per_gpu(model):
    peaks = [peak(model, gpus=n, zero=3) for n in (1, 2, 4, 8, 16)]
    assert all(a > b for a, b in zip(peaks, peaks[1:])), peaks


def test_higher_zero_stage_needs_less(model):
    peaks = [peak(model, gpus=8, zero=z) for z in (0, 1, 2, 3)]
    assert all(a > b for a, b in zip(peaks, peaks[1:])), peaks


def test_no_reference_model_when_beta_is_zero(model):
    config, params = model
    with_ref = estimate_memory(load_config(R1), model_config=config, params=params)
    without = estimate_memory(load_config(R1, ["rl.beta=0"]), model_config=config, params=params)
    assert "reference model" in with_ref.components and "reference model" not in without.components
    assert without.peak < with_ref.peak
    # on one GPU without ZeRO the reference is a whole bf16 copy: 2 bytes per parameter
    one = estimate_memory(load_config(R1), gpus=1, zero=0, model_config=config, params=params)
    assert one.components["reference model"] == pytest.approx(2 * params["total"])


def test_longer_completions_more_generations_and_no_checkpointing_cost_more(model):
    base = peak(model)
    assert peak(model, ["rollout.max_new_tokens=1024"]) > base
    assert peak(model, ["rollout.num_generations=16"]) > base
    assert peak(model, ["model.gradient_checkpointing=false"]) > base
    assert peak(model, ["model.trainable=[connector]"]) < base  # frozen LLM: no optimizer states for it


def test_single_gpu_states_add_up(model):
    config, params = model
    e = estimate_memory(load_config(R1), gpus=1, zero=0, model_config=config, params=params)
    trainable = params["connector"] + params["language_model"]
    assert e.trainable == trainable
    assert e.components["policy weights"] == pytest.approx(2 * params["total"])  # bf16
    assert e.components["AdamW m, v (fp32)"] == pytest.approx(8 * trainable)
    assert e.components["fp32 master weights"] == pytest.approx(4 * trainable)
    assert e.components["gradients"] == pytest.approx(2 * trainable)
    # ZeRO-3 over 8 GPUs divides each of these by 8
    z3 = estimate_memory(load_config(R1), gpus=8, zero=3, model_config=config, params=params)
    for name in ("policy weights", "AdamW m, v (fp32)", "fp32 master weights", "gradients", "reference model"):
        assert z3.components[name] == pytest.approx(e.components[name] / 8)
    assert 10 * GB < z3.peak < 40 * GB  # the original ran on 8x A100-40G


def test_cli_prints_both_setups(model, capsys):
    text = estimate_memory_cli(R1)
    assert "ZeRO-3 on 8 GPUs" in text and "one 80 GB GPU" in text
    assert "3.630 B" in text
    fits = [line for line in text.splitlines() if line.startswith("fits in 80 GB")]
    assert len(fits) == 1 and "yes" in fits[0]
    assert "NO" in estimate_memory_cli(R1, gpu_memory_gb=24)  # one 24 GB GPU cannot hold the 3.6B step
    assert main(["estimate-memory", "--config", str(R1), "--gpus", "4", "--zero", "2", "rl.beta=0"]) == 0
    out = capsys.readouterr().out
    assert "ZeRO-2 on 4 GPUs" in out and "no reference model" in out


def test_bad_arguments_are_config_errors(model):
    from tinyvr.errors import ConfigError

    with pytest.raises(ConfigError):
        estimate_memory(load_config(R1), gpus=0, model_config=model[0], params=model[1])
    with pytest.raises(ConfigError):
        estimate_memory(load_config(R1), zero=4, model_config=model[0], params=model[1])


def test_init_from_folder_config_wins(tmp_path):
    from tinyvr.model import build_config

    build_config("tiny").save_pretrained(tmp_path)  # config.json only: nothing else is read
    cfg = load_config(R1, [f"model.init_from={tmp_path}"])
    config, source = resolve_model_config(cfg)
    assert source.endswith("config.json") and config.text_config.hidden_size == 256
    e = estimate_memory(cfg, gpus=1, zero=0)
    assert e.params["total"] < 10e6 and e.peak < 4 * GB
