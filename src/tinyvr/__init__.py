"""tinyvr: teach small video-language models to reason about video with reinforcement learning."""

__version__ = "0.1.0"
