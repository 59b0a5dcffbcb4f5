"""Grouped generation engine: G completions per prompt from one prefill and one batched decode.

The original trainer called `generate` eight times per prompt, each time re-encoding the video
and re-reading the prompt. Here, per batch of prompts:

    video embeds [P, N, D] + prompt ids (left-padded) --splice--> embeds [P, L, D]
    one prefill  -> KV cache [P, L]  --expand xG (repeat_interleave)--> [P*G, L]
    batched decode of P*G rows; rows that emitted EOS are dropped from the cache as they finish,
    so finished rows stop costing work.

Sampling is temperature / top-k / top-p with a caller-owned `torch.Generator` (same seed, same
completions). Temperature 0 is greedy decoding and equals `generate(do_sample=False)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from tinyvr.rl.loss import completion_mask


@dataclass
class SamplingParams:
    num_generations: int = 8
    max_new_tokens: int = 512
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 50  # 0 = off
    top_p: float = 1.0
    token_budget: int = 0  # max rows*(prompt+new) tokens decoded together; 0 = all prompts at once
    compact_every: int = 8  # decode steps between drops of finished rows from the cache


@dataclass
class RolloutBatch:
    """Completions of P prompts x G generations, row r = prompt r // G."""

    completion_ids: torch.Tensor  # [P*G, Lc] right-padded with eos
    completion_mask: torch.Tensor  # [P*G, Lc] 1 up to and including the first eos (reference rule)
    truncated: torch.Tensor  # [P*G] bool: no eos within max_new_tokens
    texts: list[str]
    num_generations: int
    stats: dict = field(default_factory=dict)

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)


def sample_next(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """logits [R, V] -> token ids [R]. Filtering order as HF: temperature, top-k, top-p."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (always keep the first)
        drop = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    probs = logits.softmax(-1)
    if generator is not None and generator.device != probs.device:
        return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class _PreallocatedLayer(DynamicLayer):
    """A `DynamicLayer` whose keys/values live in a buffer with room for `capacity` positions.

    `DynamicLayer.update` concatenates, copying the whole layer cache at every decode step
    (quadratic in the completion length; ~20 % of the tiny model's decode time on CPU). Here a
    step writes its one position in place and `keys`/`values` are views of the filled part.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int):
        super().__init__()
        self.device = keys.device
        self.is_initialized = True
        self._len = keys.shape[-2]
        cap = max(capacity, self._len)
        self._k = keys.new_empty(*keys.shape[:-2], cap, keys.shape[-1])
        self._v = values.new_empty(*values.shape[:-2], cap, values.shape[-1])
        self._k[..., : self._len, :] = keys
        self._v[..., : self._len, :] = values
        self._views()

    def _views(self):
        self.keys = self._k[..., : self._len, :]
        self.values = self._v[..., : self._len, :]

    def update(self, key_states, value_states, *args, **kwargs):
        n = key_states.shape[-2]
        if self._len + n > self._k.shape[-2]:  # out of room: grow (not expected within a rollout)
            grow = max(self._k.shape[-2], n)
            self._k = torch.cat([self._k, self._k.new_empty(*self._k.shape[:-2], grow, self._k.shape[-1])], -2)
            self._v = torch.cat([self._v, self._v.new_empty(*self._v.shape[:-2], grow, self._v.shape[-1])], -2)
        self._k[..., self._len: self._len + n, :] = key_states
        self._v[..., self._len: self._len + n, :] = value_states
        self._len += n
        self._views()
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        self._len = max(0, self._len + tokens_to_remove)
        self._views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._k = self._k.repeat_interleave(repeats, dim=0)
        self._v = self._v.repeat_interleave(repeats, dim=0)
        self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self._views()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx.to(self._k.device))

    def reset(self) -> None:
        self._k = self._v = None
        self._len = 0
        super().reset()


def _preallocate(cache: DynamicCache, capacity: int) -> None:
    """Move every filled layer of `cache` into a `_PreallocatedLayer` with room for `capacity`."""
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.get_seq_length() > 0:
            cache.layers[i] = _PreallocatedLayer(layer.keys, layer.values, capacity)


class RolloutEngine:
    def __init__(self, model, processor, eos_token_id: int | None = None):
        self.model = model
        self.processor = processor
        self.eos = eos_token_id if eos_token_id is not None else processor.tokenizer.eos_token_id

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], video_embeds: torch.Tensor, params: SamplingParams,
                 generator: torch.Generator | None = None, decode_text: bool = True) -> RolloutBatch:
        """prompt_ids: P token lists (one -200 placeholder each); video_embeds [P, N, D]."""
        P, G = len(prompt_ids), params.num_generations
        chunks = self._chunks(prompt_ids, video_embeds.shape[1], params)
        parts = [self._generate_chunk([prompt_ids[i] for i in c], video_embeds[c], params, generator)
                 for c in chunks]
        width = max(p.shape[1] for p in parts)
        ids = torch.full((P * G, width), self.eos, dtype=torch.long, device=parts[0].device)
        row = 0
        for p in parts:
            ids[row: row + p.shape[0], : p.shape[1]] = p
            row += p.shape[0]
        mask, truncated = completion_mask(ids, self.eos)
        texts = self.processor.batch_decode(ids, skip_special_tokens=True) if decode_text else []
        texts = [t.strip() for t in texts]
        return RolloutBatch(ids, mask, truncated, texts, G,
                            stats={"new_tokens": int(mask.sum()), "rows": P * G})

    def _chunks(self, prompt_ids, n_video, params):
        if not params.token_budget:
            return [list(range(len(prompt_ids)))]
        chunks, cur, cost = [], [], 0
        for i, ids in enumerate(prompt_ids):
            c = params.num_generations * (len(ids) - 1 + n_video + params.max_new_tokens)
            if cur and cost + c > params.token_budget:
                chunks.append(cur)
                cur, cost = [], 0
            cur.append(i)
            cost += c
        return chunks + ([cur] if cur else [])

    def _generate_chunk(self, prompt_ids, video_embeds, params: SamplingParams, generator):
        model, lm = self.model, self.model.language_model
        device = video_embeds.device
        G, eos = params.num_generations, self.eos
        batch = self.processor.collate([{"input_ids": ids} for ids in prompt_ids], padding_side="left")
        input_ids = batch["input_ids"].to(device)
        attn = batch["attention_mask"].to(device)
        embeds, attn, pos, _ = model.prepare_inputs_embeds(input_ids, attn, video_embeds)  # [P, L, D]
        cache = DynamicCache(config=lm.config)
        out = lm(inputs_embeds=embeds, attention_mask=attn, position_ids=pos, cache=cache,
                 use_cache=True, logits_to_keep=1)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None) or cache
        # expand the prefilled cache xG: [P, L] -> [P*G, L] (rows of a prompt are adjacent), into
        # buffers with room for every new token (decode steps then write in place)
        cache.batch_repeat_interleave(G)
        _preallocate(cache, embeds.shape[1] + params.max_new_tokens)
        logits = out.logits[:, -1].repeat_interleave(G, 0)  # [P*G, V]
        attn = attn.repeat_interleave(G, 0)
        next_pos = pos[:, -1:].repeat_interleave(G, 0) + 1  # [P*G, 1]
        # No padding anywhere (one prompt, or prompts of equal length): decode steps can skip the
        # attention mask, so transformers builds no mask per step (SDPA's causal path instead).
        padded = bool((attn == 0).any())
        R = logits.shape[0]
        result = torch.full((R, params.max_new_tokens), eos, dtype=torch.long, device=device)
        active = torch.arange(R, device=device)  # rows still decoding (indices into result)
        done = torch.zeros(R, dtype=torch.bool, device=device)  # per active row
        steps = 0
        for t in range(params.max_new_tokens):
            tok = sample_next(logits, params.temperature, params.top_k, params.top_p, generator)
            tok = torch.where(done, torch.full_like(tok, eos), tok)
            result[active, t] = tok
            done = done | (tok == eos)
            steps = t + 1
            if bool(done.all()) or t + 1 == params.max_new_tokens:
                break
            if params.compact_every and (t + 1) % params.compact_every == 0 and bool(done.any()):
                keep = (~done).nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                active, done, tok = active[keep], done[keep], tok[keep]
                attn, next_pos = attn[keep], next_pos[keep]
            if padded:
                attn = torch.cat([attn, attn.new_ones(attn.shape[0], 1)], dim=1)
            out = lm(input_ids=tok[:, None], attention_mask=attn if padded else None, position_ids=next_pos,
                     cache=cache, use_cache=True)
            logits = out.logits[:, -1]
            next_pos = next_pos + 1
        return result[:, :steps]

