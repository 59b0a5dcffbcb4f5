"""Group-relative advantages (GRPO and variants) as pure tensor functions.

Rows are laid out group-major: completions ``g*G .. g*G+G-1`` belong to prompt ``g``
(B prompts × G completions = B·G rows).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tinyvr.errors import ConfigError

ADVANTAGE_SCALES: tuple[str, ...] = ("group", "batch", "none")


def _as_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """rewards [B*G] or [B, G] → fp32 [B, G]."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    r = torch.as_tensor(rewards).float()
    if r.dim() == 2:
        if r.shape[1] != group_size:
            raise ValueError(f"rewards of shape {tuple(r.shape)} do not have group_size {group_size} columns")
        return r
    if r.dim() != 1 or r.numel() % group_size:
        raise ValueError(f"rewards of shape {tuple(r.shape)} cannot be split into groups of {group_size}")
    return r.view(-1, group_size)


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    *,
    scale: str = "group",
    eps: float = 1e-4,  # reference: added to the std (not under a sqrt)
    unbiased: bool = True,  # reference: torch's default N−1 std
    noise_std: float = 0.02,  # reference: N(0, 0.02²) noise on every advantage, even in zero-std groups
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Advantages [B*G] from rewards [B*G] or [B, G].

    scale "group" (reference GRPO): (r − mean_g) / (std_g + eps);
    "batch": (r − mean_g) / (std over all B·G rewards + eps);
    "none" (Dr. GRPO): r − mean_g. Then ``+ noise_std · N(0, 1)`` drawn from ``generator``.
    """
    if scale not in ADVANTAGE_SCALES:
        raise ConfigError(f"unknown advantage scale {scale!r}; valid: {', '.join(ADVANTAGE_SCALES)}")
    r = _as_groups(rewards, group_size)  # [B, G]
    centered = r - r.mean(dim=1, keepdim=True)  # [B, G]
    if scale == "group":
        if unbiased and group_size < 2:
            raise ValueError("an unbiased group std needs group_size >= 2")
        adv = centered / (r.std(dim=1, keepdim=True, correction=int(unbiased)) + eps)
    elif scale == "batch":
        if unbiased and r.numel() < 2:
            raise ValueError("an unbiased batch std needs at least 2 rewards")
        adv = centered / (r.std(correction=int(unbiased)) + eps)
    else:
        adv = centered
    adv = adv.reshape(-1)  # [B*G]
    if noise_std > 0:
        noise = torch.randn(adv.shape, generator=generator, dtype=adv.dtype, device=adv.device)
        adv = adv + noise_std * noise
    return adv


def zero_std_groups(rewards: torch.Tensor, group_size: int, tol: float = 1e-6) -> torch.Tensor:
    """BoolTensor [B]: True for groups whose rewards are all equal (population std ≤ tol)."""
    r = _as_groups(rewards, group_size)
    return r.std(dim=1, correction=0) <= tol


def filter_zero_std_groups(rewards: torch.Tensor, group_size: int, tol: float = 1e-6) -> torch.Tensor:
    """LongTensor [K]: indices of the groups to keep for DAPO dynamic sampling (std > tol)."""
    return torch.nonzero(~zero_std_groups(rewards, group_size, tol), as_tuple=False).flatten()


def group_rows(group_indices: torch.Tensor, group_size: int) -> torch.Tensor:
    """LongTensor [K*G]: the completion rows of the given groups (group-major layout)."""
    g = torch.as_tensor(group_indices, dtype=torch.long).view(-1, 1)
    return (g * group_size + torch.arange(group_size, device=g.device)).view(-1)


def grpo_advantages(rewards, group_size, **kw) -> torch.Tensor:
    """Reference GRPO: per-group std normalisation."""
    return group_advantages(rewards, group_size, scale="group", **kw)


def batch_std_advantages(rewards, group_size, **kw) -> torch.Tensor:
    """Group-centred, divided by the batch std (less noisy than per-group std for small G)."""
    return group_advantages(rewards, group_size, scale="batch", **kw)


def dr_grpo_advantages(rewards, group_size, **kw) -> torch.Tensor:
    """Dr. GRPO: group-centred, no std division (no difficulty re-weighting)."""
    return group_advantages(rewards, group_size, scale="none", **kw)


AdvantageFn = Callable[..., torch.Tensor]

ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {
    "grpo": grpo_advantages,
    "grpo_batch_std": batch_std_advantages,
    "dr_grpo": dr_grpo_advantages,
}


def get_advantage_estimator(name: str) -> AdvantageFn:
    """Registered estimator ``f(rewards, group_size, **kw) -> [B*G]``."""
    try:
        return ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        raise ConfigError(
            f"unknown advantage estimator {name!r}; valid: {', '.join(sorted(ADVANTAGE_ESTIMATORS))}"
        ) from None
