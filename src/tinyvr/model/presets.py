"""Named model sizes: `tiny` (the CPU default) and `tinyllava-video-3b` (the published model).

`build_config("tiny", vocab_size=len(tokenizer), eos_token_id=..., pad_token_id=...)` is the usual
call; `count_parameters(config)` counts a config's parameters without allocating them.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from tinyvr.errors import ConfigError
from tinyvr.model.configuration import TinyVideoConfig

# Values are plain dicts so a preset is readable at a glance and can be printed into run cards.
PRESETS: dict[str, dict[str, Any]] = {
    # CPU default: forward+backward of batch 8 × ~200 tokens in well under a second on 2 cores.
    # group == num_frames so, as in the reference (16/16), every group is exactly one frame.
    "tiny": {
        "text_config": {
            "vocab_size": 2048,  # callers set the tokenizer's size via `vocab_size=`
            "hidden_size": 256,
            "intermediate_size": 640,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True,
            # <|endoftext|> is id 0 in the embedded tiny tokenizer (tinyvr.data.tokenizer): EOS = PAD
            "eos_token_id": 0,
            "pad_token_id": 0,
        },
        "vision_config": {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 3,  # hidden_states[-2] = output of layer 2: the last layer is skipped
            "num_attention_heads": 4,
            "patch_size": 8,
            "image_size": 64,  # 8×8 = 64 patches, 63 kept per frame
            "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": 1e-6,
        },
        "group": 8,
        "num_queries": 64,
        "resampler_depth": 1,
        "resampler_heads": 4,
        "resampler_head_dim": 32,
        "resampler_ff_mult": 2,
        # From scratch: small latents so the video, not the latents, dominates the connector's
        # output (with 1.0 the embeddings of two different clips differ by <1%; with 0.02, ~20%).
        "latents_init_std": 0.02,
        "num_frames": 8,
    },
    # Qwen2.5-3B + SigLIP-so400m-patch14-384 + group resampler 16×32 (spec §1.2-1.4, §2.3).
    "tinyllava-video-3b": {
        "text_config": {
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True,
            "hidden_act": "silu",
            "use_sliding_window": False,
            "bos_token_id": 151643,
            "eos_token_id": 151643,
            "pad_token_id": 151643,
        },
        "vision_config": {
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "patch_size": 14,
            "image_size": 384,
            "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": 1e-6,
        },
        "group": 16,
        "num_queries": 512,
        "resampler_depth": 3,
        "resampler_heads": 8,
        "resampler_head_dim": 64,
        "resampler_ff_mult": 4,
        "num_frames": 16,
    },
}

# Overrides that belong to the LLM config although callers pass them at top level.
_TEXT_KEYS = ("vocab_size",)
_TOKEN_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id")


def build_config(preset: str, **overrides) -> TinyVideoConfig:
    """Config of a named preset with overrides.

    Overrides: any `TinyVideoConfig` field (`group=`, `num_queries=`, ...), `vocab_size=` (LLM),
    `pad/bos/eos_token_id=` (set on both the outer and the text config), and `text_config=` /
    `vision_config=` dicts that update the preset's sub-config values key by key.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; valid presets are {sorted(PRESETS)}")
    values = copy.deepcopy(PRESETS[preset])
    fields = set(TinyVideoConfig.__dataclass_fields__) - {"text_config", "vision_config"}
    for key, value in overrides.items():
        if key in ("text_config", "vision_config"):
            if not isinstance(value, dict):
                raise ConfigError(f"model override {key!r} must be a dict of {key} values, got {type(value).__name__}")
            values[key].update(value)
        elif key in _TEXT_KEYS:
            values["text_config"][key] = value
        elif key in _TOKEN_KEYS:
            values[key] = value
            values["text_config"][key] = value
        elif key in fields:
            values[key] = value
        else:
            valid = sorted(fields | {"text_config", "vision_config", *_TEXT_KEYS, *_TOKEN_KEYS})
            raise ConfigError(f"unknown model override {key!r}; valid keys are {valid}")
    return TinyVideoConfig(**values)


def count_parameters(config: TinyVideoConfig) -> dict[str, int]:
    """Parameter counts per part and in total, built on the meta device (no memory used).

    Tied embeddings are counted once (as `parameters()` does).
    """
    from tinyvr.model.modeling import TinyVideoForConditionalGeneration

    with torch.device("meta"):
        model = TinyVideoForConditionalGeneration(config)
    counts = {name: sum(p.numel() for p in getattr(model, name).parameters())
              for name in ("vision_tower", "connector", "language_model")}
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


__all__ = ["PRESETS", "build_config", "count_parameters"]
