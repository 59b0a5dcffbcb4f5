"""`TinyVideoConfig`: one config for SigLIP vision tower + group resampler + Qwen2 LLM.

The nested `text_config` (Qwen2Config) and `vision_config` (SiglipVisionConfig) are ordinary
transformers configs, so `save_pretrained` writes one `config.json` holding both and
`from_pretrained` rebuilds them. Connector fields mirror the reference (spec §1.3); names follow
transformers conventions (`resampler_depth` is the reference's `num_resampler_layers`).
"""

from __future__ import annotations

from transformers import PretrainedConfig, Qwen2Config, SiglipVisionConfig

from tinyvr.constants import IMAGE_TOKEN_INDEX
from tinyvr.errors import ConfigError

SELECT_STRATEGIES = ("patch", "cls_patch")


class TinyVideoConfig(PretrainedConfig):
    """Configuration of `TinyVideoForConditionalGeneration` (defaults = the published 3B model's connector).

    `pad_token_id` / `eos_token_id` / `bos_token_id` given here are copied into `text_config` when it
    leaves them unset (and vice versa), so `language_model.generate` stops at the same EOS.
    """

    model_type = "tinyvr_video"
    # transformers v5: sub-configs are declared here; dicts in config.json become these classes.
    sub_configs_defaults = {"text_config": Qwen2Config, "vision_config": SiglipVisionConfig}

    text_config: dict | PretrainedConfig | None = None
    vision_config: dict | PretrainedConfig | None = None
    group: int = 16
    num_queries: int = 512
    resampler_depth: int = 3
    resampler_heads: int = 8
    resampler_head_dim: int = 64
    resampler_ff_mult: int = 4
    # std of the connector's learned latents at initialisation. The reference draws them from
    # randn (1.0); a model trained from scratch wants them small, or the latent residual swamps the
    # 0.02-initialised attention path and every video maps to nearly the same embeddings.
    latents_init_std: float = 1.0
    vision_feature_layer: int = -2
    vision_feature_select_strategy: str = "patch"
    num_frames: int = 16
    image_token_index: int = IMAGE_TOKEN_INDEX
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            outer, inner = getattr(self, name), getattr(self.text_config, name, None)
            if outer is None and inner is not None:
                setattr(self, name, inner)
            elif outer is not None and inner is None:
                setattr(self.text_config, name, outer)
        self.validate_fields()

    # --- derived values -------------------------------------------------------------------------
    @property
    def num_video_tokens(self) -> int:
        """Number of LLM positions one video occupies after splicing."""
        return self.num_queries

    @property
    def patches_per_frame(self) -> int:
        """Tokens each frame contributes after the select strategy (728 for SigLIP-so400m/384)."""
        # "valid" convolution: a partial border patch is dropped (384 // 14 = 27)
        side = self.vision_config.image_size // self.vision_config.patch_size
        return side * side - (1 if self.vision_feature_select_strategy == "patch" else 0)

    # --- validation -----------------------------------------------------------------------------
    def validate_fields(self) -> None:
        """Raise `ConfigError` naming the first field whose value cannot build a model."""

        def positive(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"TinyVideoConfig.{name} must be a positive integer, got {value!r}")

        for name in ("group", "num_queries", "resampler_depth", "resampler_heads",
                     "resampler_head_dim", "resampler_ff_mult", "num_frames"):
            positive(name)
        std = self.latents_init_std
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not std > 0:
            raise ConfigError(f"TinyVideoConfig.latents_init_std must be a positive number, got {std!r}")
        if self.num_queries % self.group:
            raise ConfigError(
                f"TinyVideoConfig.num_queries ({self.num_queries}) must be divisible by "
                f"TinyVideoConfig.group ({self.group}): each group gets num_queries/group latents"
            )
        if self.vision_feature_select_strategy not in SELECT_STRATEGIES:
            raise ConfigError(
                "TinyVideoConfig.vision_feature_select_strategy must be one of "
                f"{list(SELECT_STRATEGIES)}, got {self.vision_feature_select_strategy!r}"
            )
        n_states = self.vision_config.num_hidden_layers + 1  # embeddings + every encoder layer
        layer = self.vision_feature_layer
        if not isinstance(layer, int) or not (-n_states <= layer < n_states):
            raise ConfigError(
                f"TinyVideoConfig.vision_feature_layer must index the {n_states} SigLIP hidden states "
                f"(range {-n_states}..{n_states - 1}), got {layer!r}"
            )
        if self.text_config.hidden_size % 2:
            raise ConfigError(
                f"text_config.hidden_size must be even (sinusoidal PE pairs sin/cos), "
                f"got {self.text_config.hidden_size}"
            )
        if self.image_token_index >= 0:
            raise ConfigError(
                f"TinyVideoConfig.image_token_index must be negative (a placeholder that no "
                f"tokenizer emits), got {self.image_token_index}"
            )

    def vision_layers_needed(self) -> int:
        """How many SigLIP encoder layers must run to produce `hidden_states[vision_feature_layer]`."""
        n_states = self.vision_config.num_hidden_layers + 1
        return self.vision_feature_layer % n_states  # hidden_states[j] = output after j layers


__all__ = ["TinyVideoConfig", "SELECT_STRATEGIES"]
