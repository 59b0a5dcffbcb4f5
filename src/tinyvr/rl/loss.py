"""Per-token policy loss for GRPO and variants: log-probs, KL estimators, aggregation modes.

Shapes: B = completions (prompts × G), T = completion length, V = vocabulary. Everything is
computed in fp32 whatever the logits' dtype (the reference's bf16 log_softmax is a known
precision bug, spec §10.1 item 4).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tinyvr.errors import ConfigError

# --------------------------------------------------------------------------------------------
# log-probs, masks, entropy


def selective_log_softmax(logits: torch.Tensor, ids: torch.Tensor, *, chunk_rows: int = 1) -> torch.Tensor:
    """log p(ids) [B, T] from logits [B, T, V], fp32, as gather − logsumexp.

    Works on ``chunk_rows`` rows at a time so that only one fp32 copy of a few rows' logits
    exists at once (never a full [B, T, V] log-softmax).
    """
    if logits.shape[:-1] != ids.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and ids {tuple(ids.shape)} disagree")
    out = []
    for start in range(0, logits.shape[0], max(chunk_rows, 1)):
        lg = logits[start : start + chunk_rows].float()  # [b, T, V]
        picked = lg.gather(-1, ids[start : start + chunk_rows].unsqueeze(-1)).squeeze(-1)  # [b, T]
        out.append(picked - torch.logsumexp(lg, dim=-1))
    if not out:
        return logits.new_zeros(ids.shape, dtype=torch.float32)
    return torch.cat(out, dim=0)


def completion_mask(ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [B, T] long, truncated [B] bool) for right-padded completion ids [B, T].

    Reference rule (spec §6.2 step 4): mask[t] = 1 for t ≤ the first EOS (the EOS itself is
    scored); a row without EOS is all ones and is marked truncated. EOS == PAD is fine: only
    the first EOS matters.
    """
    B, T = ids.shape
    is_eos = ids == eos_id  # [B, T]
    truncated = ~is_eos.any(dim=1)  # [B]
    if T == 0:
        return torch.zeros_like(ids, dtype=torch.long), truncated
    first = torch.where(truncated, torch.full((B,), T, device=ids.device), is_eos.int().argmax(dim=1))
    mask = (torch.arange(T, device=ids.device).unsqueeze(0) <= first.unsqueeze(1)).long()
    return mask, truncated


def mask_truncated(mask: torch.Tensor, truncated: torch.Tensor) -> torch.Tensor:
    """mask [B, T] with the rows of truncated completions [B] zeroed (same dtype)."""
    return mask * (~truncated).to(mask.dtype).unsqueeze(1)


@torch.no_grad()
def token_entropy(logits: torch.Tensor, mask: torch.Tensor, *, chunk_rows: int = 1) -> torch.Tensor:
    """Masked mean of the per-token entropy of logits [B, T, V] (fp32 scalar, for logging)."""
    total = torch.zeros((), dtype=torch.float32, device=logits.device)
    m = mask.float()
    for start in range(0, logits.shape[0], max(chunk_rows, 1)):
        lg = logits[start : start + chunk_rows].float()  # [b, T, V]
        logp = torch.log_softmax(lg, dim=-1)
        ent = -(logp.exp() * logp).sum(-1)  # [b, T]
        total += (ent * m[start : start + chunk_rows]).sum()
    return total / m.sum().clamp(min=1.0)


# --------------------------------------------------------------------------------------------
# KL estimators: f(logp, ref_logp) -> per-token KL(π‖π_ref) estimate, same shape


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = logp − ref_logp (unbiased, high variance, can be negative)."""
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k2 = ½ (logp − ref_logp)²."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = exp(ref − logp) − (ref − logp) − 1 ≥ 0 (reference, spec §6.2 step 7)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "k3": kl_k3,
}


def get_kl_estimator(name: str):
    try:
        return KL_ESTIMATORS[name]
    except KeyError:
        raise ConfigError(f"unknown KL estimator {name!r}; valid: {', '.join(sorted(KL_ESTIMATORS))}") from None


def kl_penalty(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    estimator: str = "k3",
    clamp: float | None = 100.0,  # reference clamps k3 to [−100, 100]; applied to every estimator
) -> torch.Tensor:
    """Per-token KL estimate [B, T], clamped to [−clamp, clamp] (None: no clamp)."""
    kl = get_kl_estimator(estimator)(logp, ref_logp)
    return kl if clamp is None else kl.clamp(-clamp, clamp)


# --------------------------------------------------------------------------------------------
# aggregation: f(per_token [B, T], mask [B, T] float, max_completion_length) -> scalar


def aggregate_sequence(per_token: torch.Tensor, mask: torch.Tensor, max_completion_length=None) -> torch.Tensor:
    """Reference: masked mean per sequence, then mean over sequences.

    Rows with no unmasked token (e.g. masked truncated completions) are left out of the mean
    instead of producing 0/0 (the reference never has such rows).
    """
    n = mask.sum(dim=1)  # [B]
    per_seq = (per_token * mask).sum(dim=1) / n.clamp(min=1.0)  # [B]
    rows = (n > 0).float()
    return (per_seq * rows).sum() / rows.sum().clamp(min=1.0)


def aggregate_token(per_token: torch.Tensor, mask: torch.Tensor, max_completion_length=None) -> torch.Tensor:
    """DAPO: sum over all unmasked tokens / their number (long answers weigh more)."""
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def aggregate_dr_grpo(per_token: torch.Tensor, mask: torch.Tensor, max_completion_length=None) -> torch.Tensor:
    """Dr. GRPO: sum over unmasked tokens / (B · max_completion_length), a constant normaliser."""
    if max_completion_length is None:
        raise ValueError("aggregation 'dr_grpo' needs max_completion_length")
    return (per_token * mask).sum() / (per_token.shape[0] * max_completion_length)


LOSS_AGGREGATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "sequence": aggregate_sequence,
    "token": aggregate_token,
    "dr_grpo": aggregate_dr_grpo,
}


def get_loss_aggregation(name: str):
    try:
        return LOSS_AGGREGATIONS[name]
    except KeyError:
        raise ConfigError(
            f"unknown loss aggregation {name!r}; valid: {', '.join(sorted(LOSS_AGGREGATIONS))}"
        ) from None


# --------------------------------------------------------------------------------------------
# policy loss


def policy_loss(
    logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    old_logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.01,  # reference: hard-coded 0.01
    kl_estimator: str = "k3",
    kl_clamp: float | None = 100.0,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    aggregation: str = "sequence",
    max_completion_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO loss (scalar) and float metrics from logp [B, T], advantages [B], mask [B, T].

    Without ``old_logp`` (reference, single on-policy update): per token
    ``−(exp(logp − sg(logp))·A − β·kl)``; the ratio's value is 1, its gradient is ∇logp.
    With ``old_logp``: PPO clipping ``−min(r·A, clip(r, 1−eps_low, 1+eps_high)·A) + β·kl``.
    β = 0 skips the KL term (``ref_logp`` may then be None).
    """
    agg = get_loss_aggregation(aggregation)
    get_kl_estimator(kl_estimator)  # fail on a bad name even when β = 0
    if logp.shape != mask.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and mask {tuple(mask.shape)} disagree")
    m = mask.float()
    n_tok = m.sum().clamp(min=1.0)
    adv = advantages.float().view(-1, 1)  # [B, 1]

    if old_logp is None:
        ratio = torch.exp(logp - logp.detach())  # [B, T], value 1
        pg = -ratio * adv
        clip_frac = 0.0
    else:
        ratio = torch.exp(logp - old_logp)
        clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
        pg_unclipped, pg_clipped = -ratio * adv, -clipped * adv
        pg = torch.maximum(pg_unclipped, pg_clipped)  # = −min(r·A, clip(r)·A)
        clip_frac = float(((pg_clipped > pg_unclipped).float() * m).sum() / n_tok)

    per_token = pg
    kl = None
    if beta != 0:
        if ref_logp is None:
            raise ValueError("beta != 0 needs ref_logp")
        kl = kl_penalty(logp, ref_logp, kl_estimator, kl_clamp)  # [B, T]
        per_token = pg + beta * kl
    elif ref_logp is not None:  # β = 0: KL only logged
        kl = kl_penalty(logp.detach(), ref_logp, kl_estimator, kl_clamp)

    loss = agg(per_token, m, max_completion_length)
    with torch.no_grad():
        pg_part = agg(pg, m, max_completion_length)
        metrics = {
            "loss": float(loss),
            "pg_loss": float(pg_part),
            "ratio_mean": float((ratio.detach() * m).sum() / n_tok),
            "clip_fraction": clip_frac,
            "advantage_mean": float(advantages.float().mean()) if advantages.numel() else 0.0,
        }
        if kl is not None:
            # as the reference logs it: mean over sequences of the masked mean
            metrics["kl"] = float(aggregate_sequence(kl.detach(), m))
            metrics["kl_loss"] = float(beta * agg(kl.detach(), m, max_completion_length))
    return loss, metrics
