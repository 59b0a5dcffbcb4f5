"""Device, dtype and thread choice: made once, here, never inside a training loop."""

from __future__ import annotations

import os

import torch

from tinyvr.errors import ConfigError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            rank = int(os.environ.get("LOCAL_RANK", 0))
            return torch.device("cuda", rank)
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"run.device: {name!r} is not a device (use auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device: {name!r} asked for but CUDA is not available")
    return dev


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on CUDA, fp32 on CPU (CPUs without bf16 units run bf16 70-90x slower)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ConfigError(f"model.dtype: {name!r} is not one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]


ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2")


def pick_attention(name: str | None, device: torch.device, dtype: torch.dtype) -> str | None:
    """auto: flash-attention 2 on CUDA in bf16/fp16 when the `flash_attn` package is installed,
    else PyTorch SDPA. None keeps the transformers default."""
    if name is None:
        return None
    if name not in ATTENTION:
        raise ConfigError(f"model.attn_implementation: {name!r} is not one of {', '.join(ATTENTION)}")
    if name != "auto":
        return name
    import importlib.util

    half = dtype in (torch.bfloat16, torch.float16)
    if device.type == "cuda" and half and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def cpu_cores() -> int:
    """The cores this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_threads(threads: int = 0) -> int:
    """Use all cores by default (intra-op); returns the number set."""
    n = threads or cpu_cores()
    n = max(1, n // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    torch.set_num_threads(n)
    return n
