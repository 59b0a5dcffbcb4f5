"""TinyVideoConfig validation and round trip, presets, and the 3B parameter count."""

from __future__ import annotations

import pytest

from tinyvr.errors import ConfigError
from tinyvr.model import PRESETS, TinyVideoConfig, build_config, count_parameters


def test_round_trip_keeps_nested_configs(tmp_path, tiny_config):
    tiny_config.save_pretrained(tmp_path)
    loaded = TinyVideoConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == tiny_config.to_dict()
    assert type(loaded.text_config).__name__ == "Qwen2Config"
    assert type(loaded.vision_config).__name__ == "SiglipVisionConfig"
    assert loaded.text_config.vocab_size == 512 and loaded.num_video_tokens == tiny_config.num_queries


def test_token_ids_reach_the_text_config(tiny_config):
    assert tiny_config.eos_token_id == tiny_config.text_config.eos_token_id == 1
    assert tiny_config.pad_token_id == tiny_config.text_config.pad_token_id == 1


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"group": 3}, "group"),  # 64 queries not divisible by 3
        ({"num_queries": 0}, "num_queries"),
        ({"resampler_depth": 0}, "resampler_depth"),
        ({"vision_feature_select_strategy": "cls"}, "vision_feature_select_strategy"),
        ({"vision_feature_layer": 7}, "vision_feature_layer"),  # tiny tower has 4 hidden states
        ({"latents_init_std": 0.0}, "latents_init_std"),
        ({"latents_init_std": "big"}, "latents_init_std"),
    ],
)
def test_invalid_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field):
        build_config("tiny", **override)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        build_config("huge")
    assert all(name in str(err.value) for name in PRESETS)


def test_unknown_override_is_rejected():
    with pytest.raises(ConfigError, match="hiden_size"):
        build_config("tiny", hiden_size=3)


def test_overrides_and_presets_are_not_shared():
    cfg = build_config("tiny", vocab_size=777, text_config={"num_hidden_layers": 2}, group=4)
    assert (cfg.text_config.vocab_size, cfg.text_config.num_hidden_layers, cfg.group) == (777, 2, 4)
    assert PRESETS["tiny"]["text_config"]["vocab_size"] == 2048  # preset dict untouched
    assert build_config("tiny").text_config.num_hidden_layers == 4


def test_vision_layers_needed():
    cfg = build_config("tinyllava-video-3b")
    assert cfg.vision_layers_needed() == 26  # hidden_states[-2] of 27 layers = output of layer 26
    assert cfg.patches_per_frame == 728  # 27×27 minus the dropped first token


def test_3b_parameter_count_on_meta():
    counts = count_parameters(build_config("tinyllava-video-3b"))
    print(f"tinyllava-video-3b parameters: {counts}")
    assert counts["connector"] == 115_714_048
    assert counts["vision_tower"] == 428_225_600  # SigLIP-so400m incl. the unused head (spec §2.5)
    assert counts["language_model"] == 3_085_938_688  # Qwen2.5-3B, tied embeddings counted once
    assert counts["total"] == sum(counts[k] for k in ("vision_tower", "connector", "language_model"))
    assert 3.62e9 < counts["total"] < 3.64e9


def test_tiny_preset_token_ids_default_to_tiny_tokenizer():
    cfg = build_config("tiny")
    assert cfg.eos_token_id == cfg.pad_token_id == cfg.text_config.eos_token_id == 0
