"""Per-token log-probabilities of completions under a video LMM (policy, reference or old policy)."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from tinyvr.rl.loss import selective_log_softmax, token_entropy


def completion_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                        video_embeds: torch.Tensor | None, completion_ids: torch.Tensor,
                        completion_mask: torch.Tensor, with_entropy: bool = False, group_size: int = 1):
    """log p(completion tokens) [R, Lc] in fp32 (and the masked mean entropy when asked).

    prompt_ids [R, Lp] are left-padded with one -200 each (text-only rows: none, and
    `video_embeds=None`), so after splicing every completion starts at the same column and only the
    last Lc+1 positions need logits (never the full vocabulary over the video and prompt positions,
    which the original computed).

    `group_size=G`: rows come in groups of G consecutive rows with the same prompt and video (the G
    completions of one prompt). The prompt (video tokens included) then runs once per group and
    its KV cache, expanded xG, is shared by the group's completions: the same log-probs (up to
    float rounding) and the same gradients, without G-1 copies of the prompt in the forward and
    backward.
    """
    lc = completion_ids.shape[1]
    if group_size > 1 and _can_share_prompt(model, prompt_ids, prompt_mask, group_size):
        return _shared_prompt_logprobs(model, prompt_ids, prompt_mask, video_embeds, completion_ids,
                                       completion_mask, with_entropy, group_size)
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attn = torch.cat([prompt_mask, completion_mask.to(prompt_mask.dtype)], dim=1)
    out = model(input_ids=ids, attention_mask=attn, video_embeds=video_embeds, logits_to_keep=lc + 1)
    logits = out.logits[:, :-1]  # [R, Lc, V]: position t predicts completion token t
    logp = selective_log_softmax(logits, completion_ids, chunk_rows=4)
    if not with_entropy:
        return logp, None
    with torch.no_grad():
        ent = token_entropy(logits.detach(), completion_mask, chunk_rows=4)
    return logp, ent


def _can_share_prompt(model, prompt_ids, prompt_mask, G) -> bool:
    """Groups of G identical, left-padded prompt rows and a model that can return its KV cache."""
    R = prompt_ids.shape[0]
    checkpointing = (model.is_activation_checkpointing if hasattr(type(model), "is_activation_checkpointing")
                     else getattr(model, "is_gradient_checkpointing", False))  # renamed in transformers v5
    if R % G or checkpointing:  # activation checkpointing turns the KV cache off
        return False
    groups = prompt_ids.view(R // G, G, -1)
    masks = prompt_mask.view(R // G, G, -1)
    if not (bool((groups == groups[:, :1]).all()) and bool((masks == masks[:, :1]).all())):
        return False
    return bool((prompt_mask.cummax(dim=1).values == prompt_mask).all())  # 0...0 1...1: left padding


def _shared_prompt_logprobs(model, prompt_ids, prompt_mask, video_embeds, completion_ids, completion_mask,
                            with_entropy, G):
    lc = completion_ids.shape[1]
    p_ids, p_mask = prompt_ids[::G], prompt_mask[::G]  # [P, Lp]
    video = None if video_embeds is None else video_embeds[::G]  # [P, N, D]
    cache = DynamicCache(config=model.language_model.config)  # filled in place by the prompt pass
    # 1. the prompts once: their KV cache, and the logits of the last prompt position (completion token 0)
    out = model(input_ids=p_ids, attention_mask=p_mask, video_embeds=video, cache=cache, use_cache=True,
                logits_to_keep=1)
    # the spliced prompt mask: left padding, then the real tokens (the placeholder became N video tokens)
    width = cache.get_seq_length()
    n_real = p_mask.sum(dim=1, keepdim=True) + (0 if video is None else video.shape[1] - 1)  # [P, 1]
    spliced = (torch.arange(width, device=p_mask.device)[None] >= width - n_real).to(p_mask.dtype)
    first = out.logits[:, -1:].repeat_interleave(G, dim=0)  # [R, 1, V]
    logp = [selective_log_softmax(first, completion_ids[:, :1], chunk_rows=4)]
    logits = None
    if lc > 1:
        # 2. the completions on the shared cache (expanded xG: differentiable, its gradient sums the group)
        cache.batch_repeat_interleave(G)
        attn = torch.cat([spliced.repeat_interleave(G, dim=0), completion_mask.to(p_mask.dtype)], dim=1)
        out = model(input_ids=completion_ids, attention_mask=attn, cache=cache, use_cache=True,
                    logits_to_keep=torch.arange(lc - 1, device=completion_ids.device))
        logits = out.logits  # [R, Lc-1, V]: position t predicts completion token t+1
        logp.append(selective_log_softmax(logits, completion_ids[:, 1:], chunk_rows=4))
    logp = torch.cat(logp, dim=1)
    if not with_entropy:
        return logp, None
    with torch.no_grad():
        m = completion_mask.float()
        n0, n1 = m[:, :1].sum(), m[:, 1:].sum()
        ent = token_entropy(first.detach(), completion_mask[:, :1], chunk_rows=4) * n0
        if logits is not None:
            ent = ent + token_entropy(logits.detach(), completion_mask[:, 1:], chunk_rows=4) * n1
        ent = ent / (n0 + n1).clamp(min=1.0)
    return logp, ent
