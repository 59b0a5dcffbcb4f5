"""Per-token log-probabilities of completions under a video LMM (policy, reference or old policy)."""

from __future__ import annotations

import torch

from tinyvr.rl.loss import selective_log_softmax, token_entropy


def completion_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                        video_embeds: torch.Tensor, completion_ids: torch.Tensor,
                        completion_mask: torch.Tensor, with_entropy: bool = False):
    """log p(completion tokens) [R, Lc] in fp32 (and the masked mean entropy when asked).

    prompt_ids [R, Lp] are left-padded with one -200 each, so after splicing every completion
    starts at the same column and only the last Lc+1 positions need logits (never the full
    vocabulary over the video and prompt positions, which the original computed).
    """
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attn = torch.cat([prompt_mask, completion_mask.to(prompt_mask.dtype)], dim=1)
    lc = completion_ids.shape[1]
    out = model(input_ids=ids, attention_mask=attn, video_embeds=video_embeds, logits_to_keep=lc + 1)
    logits = out.logits[:, :-1]  # [R, Lc, V]: position t predicts completion token t
    logp = selective_log_softmax(logits, completion_ids, chunk_rows=4)
    if not with_entropy:
        return logp, None
    with torch.no_grad():
        ent = token_entropy(logits.detach(), completion_mask, chunk_rows=4)
    return logp, ent
