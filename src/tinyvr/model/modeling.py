"""`TinyVideoForConditionalGeneration`: SigLIP tower → `GroupResampler` → Qwen2 LLM (spec §1).

Video inputs come at three levels so callers can cache what is frozen:
`pixel_values [B,T,3,S,S]` → `vision_features` → `[B, T·P', C_vis]` → `connector` →
`video_embeds [B, N, D]`. The N video tokens replace the single `image_token_index` (−200) of each
prompt row (`prepare_inputs_embeds`), and the LLM runs on the spliced embeddings.

State-dict prefixes: `vision_tower.` (transformers `SiglipVisionModel`), `connector.` (see
`resampler.py` for the mapping to the reference), `language_model.` (`Qwen2ForCausalLM`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from transformers import PreTrainedModel, Qwen2ForCausalLM, SiglipVisionModel
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast

from tinyvr.constants import IGNORE_INDEX
from tinyvr.errors import ConfigError, TinyVRError
from tinyvr.model.configuration import TinyVideoConfig
from tinyvr.model.resampler import GroupResampler, SinusoidalPositionEncoding

MODEL_PARTS = ("vision_tower", "connector", "language_model")


class VideoTokenError(TinyVRError, ValueError):
    """`input_ids` and the video inputs do not fit together (placeholder count, batch size, width)."""


def mask_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only the real tokens of each row (left padding gets 0), so a padded
    row's tokens sit at the same positions as unpadded."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)


def set_trainable(model: nn.Module, parts: Iterable[str]) -> None:
    """Make exactly the named parts trainable (`requires_grad`), freeze the others.

    `parts` ⊂ {"vision_tower", "connector", "language_model"}; e.g. GRPO uses
    `["connector", "language_model"]` (the reference freezes the tower in every R1 stage).
    """
    parts = list(parts)
    unknown = sorted(set(parts) - set(MODEL_PARTS))
    if unknown:
        raise ConfigError(f"set_trainable: unknown part(s) {unknown}; valid parts are {list(MODEL_PARTS)}")
    for name in MODEL_PARTS:
        getattr(model, name).requires_grad_(name in parts)


class TinyVideoPreTrainedModel(PreTrainedModel):
    config: TinyVideoConfig
    config_class = TinyVideoConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["Qwen2DecoderLayer", "SiglipEncoderLayer", "PerceiverAttention"]

    def _init_weights(self, module):
        # Linear / LayerNorm / Embedding follow the HF defaults (std = text_config.initializer_range).
        super()._init_weights(module)
        if isinstance(module, GroupResampler):
            init.normal_(module.latents, std=self.config.latents_init_std)  # reference: randn (1.0)
        elif isinstance(module, SinusoidalPositionEncoding):
            # non-persistent buffer: never in a checkpoint, so it is rebuilt after every load
            init.copy_(module.table, module.reset_table())


class TinyVideoForConditionalGeneration(TinyVideoPreTrainedModel):
    """Video LMM: `vision_tower` (frozen by default), `connector`, `language_model`."""

    def __init__(self, config: TinyVideoConfig):
        super().__init__(config)
        self.vision_tower = SiglipVisionModel(config.vision_config)
        self.connector = GroupResampler.from_config(config)
        self.language_model = Qwen2ForCausalLM(config.text_config)
        self.post_init()
        set_trainable(self, ["connector", "language_model"])

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """HF `from_pretrained`; the vision tower comes back frozen, as after `__init__`.

        (transformers re-creates the loaded parameters, which resets `requires_grad` to True.)
        """
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # output_loading_info=True
        set_trainable(model, ["connector", "language_model"])
        return loaded

    # --- HF plumbing ----------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    # --- video → embeddings ---------------------------------------------------------------------
    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`[B, T, 3, S, S]` → `[B, T·P', C_vis]`: SigLIP `hidden_states[vision_feature_layer]`.

        Only the encoder layers needed for that hidden state run (the reference computes and
        discards the rest). Under "patch" token 0 of every frame is dropped (SigLIP has no CLS, so
        this discards a real patch: kept for checkpoint compatibility, spec §1.2).
        """
        if pixel_values.dim() != 5:
            raise VideoTokenError(f"pixel_values must be [B, T, 3, S, S], got shape {tuple(pixel_values.shape)}")
        b, t = pixel_values.shape[:2]
        tower = self.vision_tower
        weight = tower.embeddings.patch_embedding.weight
        frames = pixel_values.flatten(0, 1).to(device=weight.device, dtype=weight.dtype)
        # A frozen tower needs no autograd graph: saves the activations of every frame.
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in tower.parameters())
        with torch.set_grad_enabled(needs_grad):
            hidden = tower.embeddings(frames)  # [B*T, P, C] = hidden_states[0]
            for layer in tower.encoder.layers[: self.config.vision_layers_needed()]:
                hidden = layer(hidden, None)  # no attention mask: every patch is real
        if self.config.vision_feature_select_strategy == "patch":
            hidden = hidden[:, 1:]  # [B*T, P-1, C]
        return hidden.reshape(b, t * hidden.shape[1], hidden.shape[2])  # frame-major

    def encode_video(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`[B, T, 3, S, S]` → video embeddings `[B, num_queries, D]`."""
        return self.connector(self.vision_features(pixel_values))

    def _video_embeds(self, pixel_values=None, video_features=None, video_embeds=None) -> torch.Tensor | None:
        given = [x is not None for x in (pixel_values, video_features, video_embeds)]
        if sum(given) > 1:
            raise VideoTokenError("pass only one of pixel_values, video_features, video_embeds")
        if pixel_values is not None:
            return self.encode_video(pixel_values)
        if video_features is not None:
            return self.connector(video_features)
        return video_embeds

    # --- splicing -------------------------------------------------------------------------------
    def prepare_inputs_embeds(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        video_embeds: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Replace each row's single placeholder by its N video tokens.

        input_ids/attention_mask/labels `[B, L]`, video_embeds `[B, N, D]` →
        `(inputs_embeds [B, L-1+N, D], attention_mask, position_ids, labels)` all of length L-1+N.
        Padding (left or right) stays where it was; video positions get mask 1 and label −100;
        position ids count real tokens (`cumsum(mask) − 1`, 0 on pads).
        """
        if input_ids.dim() != 2:
            raise VideoTokenError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
        bsz, length = input_ids.shape
        if video_embeds.dim() != 3 or video_embeds.shape[0] != bsz:
            raise VideoTokenError(
                f"got {video_embeds.shape[0] if video_embeds.dim() == 3 else '?'} video(s) of shape "
                f"{tuple(video_embeds.shape)} for {bsz} prompt row(s): need [B={bsz}, N, D], one video per row"
            )
        embed = self.get_input_embeddings()
        if video_embeds.shape[2] != embed.embedding_dim:
            raise VideoTokenError(
                f"video_embeds width {video_embeds.shape[2]} != LLM hidden size {embed.embedding_dim}"
            )
        is_placeholder = input_ids == self.config.image_token_index
        counts = is_placeholder.sum(dim=1)
        bad = (counts != 1).nonzero().flatten().tolist()
        if bad:
            detail = ", ".join(f"row {r}: {int(counts[r])}" for r in bad[:8])
            raise VideoTokenError(
                f"every input_ids row must hold exactly one video placeholder "
                f"({self.config.image_token_index}); found {detail}"
            )
        n_vid = video_embeds.shape[1]
        out_len = length - 1 + n_vid
        device = input_ids.device
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)

        place = is_placeholder.long().argmax(dim=1, keepdim=True)  # [B, 1] placeholder index p
        j = torch.arange(out_len, device=device).unsqueeze(0)  # [1, L'] output positions
        is_video = (j >= place) & (j < place + n_vid)  # [B, L']
        # output j < p takes text j; j >= p+N takes text j-N+1 (the placeholder itself is skipped)
        text_idx = torch.where(j < place, j, j - n_vid + 1).clamp(0, length - 1)  # [B, L']
        video_idx = (j - place).clamp(0, n_vid - 1)  # [B, L']

        text_embeds = embed(input_ids.masked_fill(is_placeholder, 0))  # [B, L, D]
        d = text_embeds.shape[-1]
        text_part = text_embeds.gather(1, text_idx.unsqueeze(-1).expand(-1, -1, d))  # [B, L', D]
        video_part = video_embeds.to(text_embeds.dtype).gather(1, video_idx.unsqueeze(-1).expand(-1, -1, d))
        inputs_embeds = torch.where(is_video.unsqueeze(-1), video_part, text_part)  # [B, L', D]

        new_mask = torch.where(is_video, torch.ones_like(text_idx), attention_mask.long().gather(1, text_idx))
        new_mask = new_mask.to(attention_mask.dtype)
        position_ids = mask_positions(new_mask)
        new_labels = None
        if labels is not None:
            new_labels = labels.gather(1, text_idx).masked_fill(is_video, IGNORE_INDEX)
        return inputs_embeds, new_mask, position_ids, new_labels

    # --- forward / generate ---------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        video_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values=None,
        use_cache: bool | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits (and loss if `labels`) over the spliced sequence `[B, L-1+N]`.

        With a video input every row needs one placeholder. Without one, this is a plain LLM call
        (used e.g. for decode steps with `past_key_values`). The KV cache comes back in `.cache`
        (transformers v5 name; `.past_key_values` still works with a deprecation warning).
        """
        cache = kwargs.pop("cache", None) if past_key_values is None else past_key_values
        video = self._video_embeds(pixel_values, video_features, video_embeds)
        if video is not None:
            if inputs_embeds is not None:
                raise VideoTokenError("pass input_ids (with the placeholder), not inputs_embeds, with a video")
            inputs_embeds, attention_mask, spliced_pos, labels = self.prepare_inputs_embeds(
                input_ids, attention_mask, video, labels
            )
            input_ids = None
            position_ids = spliced_pos if position_ids is None else position_ids
        elif input_ids is not None and (input_ids == self.config.image_token_index).any():
            raise VideoTokenError(
                "input_ids hold a video placeholder but no pixel_values/video_features/video_embeds were given"
            )
        elif position_ids is None and attention_mask is not None:
            # Position ids follow the mask so left padding does not shift the real tokens. The mask
            # spans cached + current tokens (HF convention); the current ones are its last columns.
            cur_len = (input_ids if input_ids is not None else inputs_embeds).shape[1]
            position_ids = mask_positions(attention_mask)[:, -cur_len:]
        return self.language_model(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            labels=labels,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        video_embeds: torch.Tensor | None = None,
        **generate_kwargs,
    ) -> torch.Tensor:
        """Decode with the KV cache; returns only the new tokens `[B, new]`.

        Any padding side is accepted: the spliced rows are re-aligned to left padding (stable, so
        token order is kept) because decoding appends at the right end of every row.
        """
        video = self._video_embeds(pixel_values, video_features, video_embeds)
        if video is None:
            if (input_ids == self.config.image_token_index).any():
                raise VideoTokenError("input_ids hold a video placeholder but no video input was given")
            embeds = self.get_input_embeddings()(input_ids)
            mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        else:
            embeds, mask, _, _ = self.prepare_inputs_embeds(input_ids, attention_mask, video)
        # pads first, real tokens after, each row in its original order
        order = torch.sort((mask != 0).long(), dim=1, stable=True).indices  # [B, L']
        mask = mask.gather(1, order)
        embeds = embeds.gather(1, order.unsqueeze(-1).expand(-1, -1, embeds.shape[-1]))
        # With only inputs_embeds, HF returns just the new tokens; position ids are derived by
        # generate from the mask (cumsum − 1) and then advanced by one per step.
        return self.language_model.generate(inputs_embeds=embeds, attention_mask=mask, **generate_kwargs)


__all__ = ["TinyVideoForConditionalGeneration", "TinyVideoPreTrainedModel", "set_trainable", "VideoTokenError"]
