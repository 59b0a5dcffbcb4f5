"""Device, dtype and attention choices."""

import pytest
import torch


def test_attention_auto_picks_flash_attention_only_on_cuda_half_when_installed(monkeypatch):
    import importlib.util

    from tinyvr.errors import ConfigError
    from tinyvr.utils.device import pick_attention

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    real = importlib.util.find_spec
    for installed in (False, True):
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: (object() if installed else None) if name == "flash_attn" else real(name, *a))
        assert pick_attention("auto", cuda, torch.bfloat16) == ("flash_attention_2" if installed else "sdpa")
        assert pick_attention("auto", cuda, torch.float32) == "sdpa"  # flash-attn needs half precision
        assert pick_attention("auto", cpu, torch.bfloat16) == "sdpa"
    assert pick_attention("eager", cuda, torch.bfloat16) == "eager" and pick_attention(None, cpu, torch.float32) is None
    with pytest.raises(ConfigError, match="attn_implementation"):
        pick_attention("flash", cpu, torch.float32)


def test_training_and_eval_configs_of_the_3b_recipe_ask_for_auto_attention():
    from tinyvr.config import load_config

    for name in ("grpo", "coldstart", "eval"):
        assert load_config(f"configs/tinyllava_video_r1/{name}.yaml").model.attn_implementation == "auto"
