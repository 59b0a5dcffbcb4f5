"""Shared fixtures: the tiny model is built once per test session (transformers import is slow)."""

from __future__ import annotations

import pytest
import torch

EOS = 1  # pad == eos, as with the Qwen2.5 tokenizer


@pytest.fixture(scope="session")
def tiny_config():
    from tinyvr.model import build_config

    # Larger init std than HF's 0.02 so greedy decoding does not collapse onto one token and the
    # generation tests can tell right from wrong positions.
    return build_config(
        "tiny",
        vocab_size=512,
        eos_token_id=EOS,
        pad_token_id=EOS,
        text_config={"initializer_range": 0.2},
    )


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    """Eval-mode tiny model; tests must not change its weights or config."""
    from tinyvr.model import TinyVideoForConditionalGeneration

    torch.manual_seed(0)
    return TinyVideoForConditionalGeneration(tiny_config).eval()


@pytest.fixture(scope="session")
def pixel_values(tiny_config):
    """Two random videos `[2, T, 3, S, S]` in the processor's [-1, 1] range."""
    g = torch.Generator().manual_seed(1)
    size = tiny_config.vision_config.image_size
    return torch.rand(2, tiny_config.num_frames, 3, size, size, generator=g) * 2 - 1
