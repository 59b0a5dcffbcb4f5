"""Grouped generation engine: G completions per prompt from one prefill and one batched decode.

The original trainer called `generate` eight times per prompt, each time re-encoding the video
and re-reading the prompt. Here, per batch of prompts:

    video embeds [P, N, D] + prompt ids (left-padded) --splice--> embeds [P, L, D]
    one prefill  -> KV cache [P, L]  --expand xG (repeat_interleave)--> [P*G, L]
    batched decode of P*G rows; rows that emitted EOS are dropped from the cache as they finish,
    so finished rows stop costing work.

Text-only prompts (no video, no placeholder) take `video_embeds=None`: the prefill then runs on
the token embeddings alone and decoding is the same.

Sampling is temperature / top-k / top-p with a caller-owned `torch.Generator` (same seed, same
completions). Temperature 0 is greedy decoding and equals `generate(do_sample=False)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from tinyvr.model.modeling import VideoTokenError, mask_positions
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
    greedy_rows: int = 0  # the first this many of a prompt's G rows decode greedily (argmax)


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
    logits = logits.float()
    if temperature != 1.0:  # x / 1.0 == x: skip the op
        logits = logits / temperature
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


class _Qwen2DecodeStep:
    """One decode step of a transformers `Qwen2ForCausalLM`, without the per-call machinery of its forward.

    The decode loop calls the LM max_new_tokens times on one token per row. At the tiny preset the
    work of such a call is small, and transformers' wrappers around it (output capturing, config
    defaults, deprecated-kwarg checks, the per-layer checkpointing wrapper, output dataclasses,
    kwargs plumbing) and the rotary cos/sin recomputed on every call are a sizeable part of it.
    This runs what `Qwen2Model.forward` runs, in the same order and with the same functions: the
    model's own modules (embedding, norms, projections, MLP, LM head, with their hooks), its mask
    builder, its rotary function and its attention function; only cos/sin come from a table the
    model's rotary module fills once per rollout (the same values). So the logits are bit-identical
    (tests/rl/test_rollout.py). `build` returns None, and the LM's forward is used, for anything
    else: another model class, sliding-window layers, a RoPE other than the default, hub kernels,
    or hooks on the modules whose forward this replaces (FSDP, profilers).
    """

    def __init__(self, lm, positions: int):
        from transformers.masking_utils import create_causal_mask
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        from transformers.models.qwen2 import modeling_qwen2 as q2

        self.lm, self.config = lm, lm.config
        self.create_mask, self.rotary = create_causal_mask, q2.apply_rotary_pos_emb
        self.attention = ALL_ATTENTION_FUNCTIONS.get_interface(lm.config._attn_implementation,
                                                                q2.eager_attention_forward)
        weight = lm.get_input_embeddings().weight
        probe = torch.zeros(1, device=weight.device, dtype=weight.dtype)
        cos, sin = lm.model.rotary_emb(probe, torch.arange(positions, device=weight.device)[None])
        self.cos, self.sin = cos[0], sin[0]  # [positions, head_dim]

    @classmethod
    def build(cls, lm, positions: int):
        from transformers.models.qwen2 import modeling_qwen2 as q2

        cfg = lm.config
        if type(lm) is not q2.Qwen2ForCausalLM or type(lm.model) is not q2.Qwen2Model:
            return None
        if getattr(lm, "use_kernels", False) or cfg.rope_parameters.get("rope_type", "default") != "default":
            return None
        if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or ["full_attention"]):
            return None
        replaced = [lm, lm.model, lm.model.rotary_emb]
        for layer in lm.model.layers:
            if type(layer) is not q2.Qwen2DecoderLayer or type(layer.self_attn) is not q2.Qwen2Attention:
                return None
            replaced += [layer, layer.self_attn]
        if any(m._forward_hooks or m._forward_pre_hooks for m in replaced):
            return None
        if torch.nn.modules.module._global_forward_hooks or torch.nn.modules.module._global_forward_pre_hooks:
            return None
        return cls(lm, positions)

    def __call__(self, tok: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor,
                 cache) -> torch.Tensor:
        """tok [R], attention_mask [R, past+1] or None, position_ids [R, 1] -> logits [R, V]."""
        model = self.lm.model
        hidden = model.embed_tokens(tok[:, None])  # [R, 1, D]
        mask = self.create_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask,
                                cache=cache, position_ids=position_ids)
        cos, sin = self.cos[position_ids], self.sin[position_ids]  # [R, 1, head_dim], as rotary_emb gives
        for layer in model.layers[: self.config.num_hidden_layers]:
            # Qwen2DecoderLayer.forward
            residual = hidden
            hidden = layer.input_layernorm(hidden)
            # Qwen2Attention.forward
            attn = layer.self_attn
            input_shape = hidden.shape[:-1]
            hidden_shape = (*input_shape, -1, attn.head_dim)
            q = attn.q_proj(hidden).view(hidden_shape).transpose(1, 2)
            k = attn.k_proj(hidden).view(hidden_shape).transpose(1, 2)
            v = attn.v_proj(hidden).view(hidden_shape).transpose(1, 2)
            q, k = self.rotary(q, k, cos, sin)
            k, v = cache.update(k, v, attn.layer_idx)
            out, _ = self.attention(attn, q, k, v, mask, dropout=0.0, scaling=attn.scaling,
                                    sliding_window=attn.sliding_window, position_ids=position_ids, use_cache=True)
            out = attn.o_proj(out.reshape(*input_shape, -1).contiguous())
            hidden = residual + out
            residual = hidden
            hidden = residual + layer.mlp(layer.post_attention_layernorm(hidden))
        hidden = model.norm(hidden)
        return self.lm.lm_head(hidden)[:, -1]


class RolloutEngine:
    def __init__(self, model, processor, eos_token_id: int | None = None):
        self.model = model
        self.processor = processor
        self.eos = eos_token_id if eos_token_id is not None else processor.tokenizer.eos_token_id

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], video_embeds: torch.Tensor | None, params: SamplingParams,
                 generator: torch.Generator | None = None, decode_text: bool = True) -> RolloutBatch:
        """prompt_ids: P token lists (one -200 placeholder each); video_embeds [P, N, D].

        Text-only prompts: `video_embeds=None` and no placeholder in any prompt.
        """
        P, G = len(prompt_ids), params.num_generations
        if video_embeds is None:
            placeholder = self.model.config.image_token_index
            bad = [i for i, ids in enumerate(prompt_ids) if placeholder in ids]
            if bad:
                raise VideoTokenError(f"prompt(s) {bad[:8]} hold a video placeholder ({placeholder}) "
                                      "but no video_embeds were given")
        chunks = self._chunks(prompt_ids, 0 if video_embeds is None else video_embeds.shape[1], params)
        parts = [self._generate_chunk([prompt_ids[i] for i in c], None if video_embeds is None else video_embeds[c],
                                      params, generator)
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
            # the placeholder is replaced by n_video tokens (text-only prompts: none, n_video = 0)
            c = params.num_generations * (len(ids) - (1 if n_video else 0) + n_video + params.max_new_tokens)
            if cur and cost + c > params.token_budget:
                chunks.append(cur)
                cur, cost = [], 0
            cur.append(i)
            cost += c
        return chunks + ([cur] if cur else [])

    def _generate_chunk(self, prompt_ids, video_embeds, params: SamplingParams, generator):
        model, lm = self.model, self.model.language_model
        device = lm.get_input_embeddings().weight.device if video_embeds is None else video_embeds.device
        G, eos = params.num_generations, self.eos
        batch = self.processor.collate([{"input_ids": ids} for ids in prompt_ids], padding_side="left")
        input_ids = batch["input_ids"].to(device)
        attn = batch["attention_mask"].to(device)
        if video_embeds is None:  # text only: the token embeddings, positions counting real tokens
            embeds = lm.get_input_embeddings()(input_ids)  # [P, L, D]
            pos = mask_positions(attn)
        else:
            embeds, attn, pos, _ = model.prepare_inputs_embeds(input_ids, attn, video_embeds)  # [P, L, D]
        cache = DynamicCache(config=lm.config)  # filled in place by the prefill
        out = lm(inputs_embeds=embeds, attention_mask=attn, position_ids=pos, cache=cache,
                 use_cache=True, logits_to_keep=1)
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
        fast = _Qwen2DecodeStep.build(lm, int(next_pos.max()) + params.max_new_tokens)
        R = logits.shape[0]
        result = torch.full((R, params.max_new_tokens), eos, dtype=torch.long, device=device)
        active = torch.arange(R, device=device)  # rows still decoding (indices into result)
        done = torch.zeros(R, dtype=torch.bool, device=device)  # per active row
        steps = 0
        greedy = (active % G) < params.greedy_rows if params.greedy_rows else None  # per active row
        for t in range(params.max_new_tokens):
            tok = sample_next(logits, params.temperature, params.top_k, params.top_p, generator)
            if greedy is not None:  # every row still draws: without compaction the samples are unchanged
                tok = torch.where(greedy, logits.argmax(-1), tok)
            tok = tok.masked_fill(done, eos)
            result[active, t] = tok
            done = done | (tok == eos)
            steps = t + 1
            if bool(done.all()) or t + 1 == params.max_new_tokens:
                break
            if params.compact_every and (t + 1) % params.compact_every == 0 and bool(done.any()):
                keep = (~done).nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                active, done, tok = active[keep], done[keep], tok[keep]
                if greedy is not None:
                    greedy = greedy[keep]
                attn, next_pos = attn[keep], next_pos[keep]
            if padded:
                attn = torch.cat([attn, attn.new_ones(attn.shape[0], 1)], dim=1)
            if fast is not None:  # the same computation as the LM's forward, without its per-call wrappers
                logits = fast(tok, attn if padded else None, next_pos, cache)
            else:
                out = lm(input_ids=tok[:, None], attention_mask=attn if padded else None, position_ids=next_pos,
                         cache=cache, use_cache=True)
                logits = out.logits[:, -1]
            next_pos = next_pos + 1
        return result[:, :steps]

