"""tinyvr.model: SigLIP vision tower + group resampler + Qwen2 LLM (TinyLLaVA-Video layout)."""

from tinyvr.model.configuration import TinyVideoConfig
from tinyvr.model.modeling import TinyVideoForConditionalGeneration, VideoTokenError, set_trainable
from tinyvr.model.presets import PRESETS, build_config, count_parameters
from tinyvr.model.resampler import GroupResampler

__all__ = [
    "PRESETS",
    "GroupResampler",
    "TinyVideoConfig",
    "TinyVideoForConditionalGeneration",
    "VideoTokenError",
    "build_config",
    "count_parameters",
    "set_trainable",
]
