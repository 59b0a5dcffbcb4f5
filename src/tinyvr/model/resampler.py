"""`GroupResampler`: the reference's `groupresampler` connector (spec §1.3), re-implemented.

Frame features `[B, N, C_vis]` (frames flattened frame-major) → `linear` → split the N tokens into
`group` contiguous chunks → each chunk is summarised by a Perceiver resampler into
`num_queries / group` latents (the latents are shared by all chunks and restart for every chunk) →
concatenate the chunk outputs → add a fixed sinusoidal position encoding → `[B, num_queries, D]`.

Checkpoint key rule: submodule names are the reference's own, so a reference key
`connector._connector.<name>` is our `connector.<name>` (the legacy sub-folder format stores
`_connector.<name>`: strip the `_connector.` prefix). The full list is::

    linear.{weight,bias}                       latents
    layers.{i}.0.norm_media.{weight,bias}      layers.{i}.0.norm_latents.{weight,bias}
    layers.{i}.0.to_q.weight                   layers.{i}.0.to_kv.weight
    layers.{i}.0.to_out.weight                 layers.{i}.1.0.{weight,bias}   (FF LayerNorm)
    layers.{i}.1.1.weight                      layers.{i}.1.3.weight          (FF Linears)
    norm.{weight,bias}

The position encoding is a non-persistent buffer (not in the state dict, as in the reference).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_position_encoding(num_positions: int, dim: int, device=None) -> torch.Tensor:
    """`[num_positions, dim]` sin/cos table, computed in fp32 and rounded through fp16 like the reference.

    PE[p, 2i] = sin(p·exp(−2i·ln(10000)/dim)), PE[p, 2i+1] = cos(same). The reference writes the fp32
    values into a float16 tensor before casting to the activation dtype, so we keep that rounding
    (fp16 values are exact in fp32, so storing the rounded table as fp32 loses nothing).
    """
    position = torch.arange(num_positions, dtype=torch.float32, device=device).unsqueeze(1)
    div_term = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim)
    )
    pe = torch.zeros(num_positions, dim, dtype=torch.float32, device=device)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe.to(torch.float16).to(torch.float32)


class PerceiverAttention(nn.Module):
    """Latents attend to `[media; latents]` (no mask, no dropout); all projections bias-free."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.scale = head_dim**-0.5
        inner = heads * head_dim
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        # media: [B', n, D]; latents: [B', q, D]  (B' = batch × chunks processed together)
        media = self.norm_media(media)
        latents = self.norm_latents(latents)
        b, q_len, _ = latents.shape
        q = self.to_q(latents)  # [B', q, h*dh]
        k, v = self.to_kv(torch.cat([media, latents], dim=1)).chunk(2, dim=-1)  # [B', n+q, h*dh] each

        def heads(t: torch.Tensor) -> torch.Tensor:  # [B', L, h*dh] -> [B', h, L, dh]
            return t.view(b, t.shape[1], self.heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(q) * self.scale, heads(k), heads(v)  # scale q first, as the reference
        # softmax subtracts the row max internally (the reference does it explicitly; same values)
        attn = torch.matmul(q, k.transpose(-1, -2)).softmax(dim=-1)  # [B', h, q, n+q]
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, q_len, self.heads * self.head_dim)
        return self.to_out(out)


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    """Indices 0..3 match the reference state dict (`layers.{i}.1.{0,1,3}`)."""
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, dim * mult, bias=False),
        nn.GELU(),  # exact erf GELU
        nn.Linear(dim * mult, dim, bias=False),
    )


class SinusoidalPositionEncoding(nn.Module):
    """Holds the fixed PE table as a non-persistent buffer (re-created, never loaded)."""

    def __init__(self, num_positions: int, dim: int):
        super().__init__()
        self.num_positions, self.dim = num_positions, dim
        self.register_buffer("table", sinusoidal_position_encoding(num_positions, dim), persistent=False)

    def reset_table(self) -> torch.Tensor:
        """The values the buffer must hold (used by weight init after loading)."""
        return sinusoidal_position_encoding(self.num_positions, self.dim, device=self.table.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, num_positions, dim]
        return x + self.table.to(x.dtype)


class GroupResampler(nn.Module):
    """`[B, N, vision_hidden]` → `[B, num_queries, dim]` (see the module docstring)."""

    def __init__(
        self,
        vision_hidden_size: int,
        dim: int,
        num_queries: int,
        group: int,
        depth: int,
        heads: int,
        head_dim: int,
        ff_mult: int,
    ):
        super().__init__()
        if num_queries % group:
            raise ValueError(f"num_queries ({num_queries}) must be divisible by group ({group})")
        self.group, self.num_queries = group, num_queries
        self.num_latents = num_queries // group
        self.linear = nn.Linear(vision_hidden_size, dim)
        self.latents = nn.Parameter(torch.randn(self.num_latents, dim))
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, heads, head_dim), feed_forward(dim, ff_mult)])
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.position_encoding = SinusoidalPositionEncoding(num_queries, dim)

    @classmethod
    def from_config(cls, config) -> GroupResampler:
        """Build from a `TinyVideoConfig`."""
        return cls(
            vision_hidden_size=config.vision_config.hidden_size,
            dim=config.text_config.hidden_size,
            num_queries=config.num_queries,
            group=config.group,
            depth=config.resampler_depth,
            heads=config.resampler_heads,
            head_dim=config.resampler_head_dim,
            ff_mult=config.resampler_ff_mult,
        )

    def resample(self, media: torch.Tensor) -> torch.Tensor:
        """Perceiver over independent chunks: `[B', n, D]` → `[B', num_latents, D]`."""
        lat = self.latents.unsqueeze(0).expand(media.shape[0], -1, -1)  # fresh latents per chunk
        for attn, ff in self.layers:
            lat = attn(media, lat) + lat
            lat = ff(lat) + lat
        return self.norm(lat)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # features: [B, N, C_vis], frames flattened frame-major (N = frames × patches)
        x = self.linear(features)  # [B, N, D]
        b, n, d = x.shape
        g = self.group
        size, extra = divmod(n, g)  # first `extra` chunks hold size+1 tokens, the rest `size`
        # Chunks of equal length are stacked into the batch axis, so all groups run in one pass;
        # with unequal lengths there are two such stacks (long chunks first, order preserved).
        outs = []
        split = extra * (size + 1)
        for start, count, length in ((0, extra, size + 1), (split, g - extra, size)):
            if count == 0:
                continue
            chunks = x[:, start : start + count * length].reshape(b * count, length, d)  # [B*count, len, D]
            outs.append(self.resample(chunks).view(b, count * self.num_latents, d))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)  # [B, G*num_latents, D]
        return self.position_encoding(out)


__all__ = ["GroupResampler", "PerceiverAttention", "SinusoidalPositionEncoding", "sinusoidal_position_encoding"]
