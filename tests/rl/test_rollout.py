"""RolloutEngine against sequential `model.generate` calls, plus its masks, seeding, chunking and
compaction. One tiny random model (fp32) is built once for the module.

EOS: a random model almost never emits the tokenizer's EOS, so the tests pick as "EOS" a token
that the greedy continuation of one prompt emits after a few steps and that another prompt never
emits: that gives rows that stop early and rows that run into `max_new_tokens` in the same batch.
"""

from __future__ import annotations

import pytest
import torch

from tinyvr.rl.rollout import RolloutEngine, SamplingParams

MAX_NEW = 12
QUESTIONS = [
    "Which direction does the red circle move? Options: A. left B. right C. up D. down",
    "How many shapes are in the video?",
    "What happens after the blue square hits the left wall and the green triangle appears in the "
    "upper half of the frame? Options: A. it turns red B. it stops C. it bounces back D. it disappears",
]


@pytest.fixture(scope="module")
def setup():
    from tinyvr.recipes.common import new_model

    # larger init std than HF's 0.02 so greedy decoding does not collapse onto one repeated token
    model, processor = new_model("tiny", overrides={"text_config": {"initializer_range": 0.2}}, seed=0)
    model = model.float().eval()
    prompts = [processor.encode_prompt(q) for q in QUESTIONS]
    assert len({len(p) for p in prompts}) == len(prompts)  # different lengths: left padding at work
    cfg = model.config
    size = cfg.vision_config.image_size
    g = torch.Generator().manual_seed(7)
    px = torch.rand(len(prompts), cfg.num_frames, 3, size, size, generator=g) * 2 - 1
    with torch.no_grad():
        embeds = model.encode_video(px)  # [P, N, D]
    return model, processor, prompts, embeds


def hf_greedy(model, prompt, embeds, eos, max_new=MAX_NEW):
    """One prompt, as the original did it: `generate(do_sample=False)` on a batch of one."""
    out = model.generate(torch.tensor([prompt]), video_embeds=embeds, max_new_tokens=max_new,
                         do_sample=False, eos_token_id=eos, pad_token_id=eos)
    return out[0].tolist()


@pytest.fixture(scope="module")
def eos_and_reference(setup):
    """(eos, [per-prompt greedy ids]) with at least one prompt stopping early and one truncated."""
    model, processor, prompts, embeds = setup
    free = [hf_greedy(model, p, embeds[i: i + 1], eos=-1) for i, p in enumerate(prompts)]  # no EOS at all
    assert all(len(f) == MAX_NEW for f in free)
    assert any(len(set(f)) > 3 for f in free)  # a non-degenerate continuation
    eos = None
    for i in range(len(free)):
        for t in range(2, MAX_NEW - 3):  # stop at step t (>= 2) of prompt i, never in some other prompt
            tok = free[i][t]
            if tok in free[i][:t]:
                continue
            if any(tok not in free[j] for j in range(len(free)) if j != i):
                eos = tok
                break
        if eos is not None:
            break
    assert eos is not None, "no usable stop token in the greedy continuations"
    ref = [hf_greedy(model, p, embeds[i: i + 1], eos=eos) for i, p in enumerate(prompts)]
    lengths = [len(r) for r in ref]
    assert min(lengths) < MAX_NEW and max(lengths) == MAX_NEW  # both an EOS hit and a max_new hit
    return eos, ref


def engine_greedy(setup, eos, G, **kw):
    model, processor, prompts, embeds = setup
    engine = RolloutEngine(model, processor, eos_token_id=eos)
    params = SamplingParams(num_generations=G, max_new_tokens=MAX_NEW, temperature=0.0, **kw)
    return engine.generate(prompts, embeds, params)


def expected_rows(ref, eos, G, width):
    rows = []
    for r in ref:
        padded = r + [eos] * (width - len(r))
        rows += [padded] * G
    return torch.tensor(rows)


@pytest.mark.parametrize("G", [1, 3])
def test_greedy_equals_sequential_generate(setup, eos_and_reference, G):
    eos, ref = eos_and_reference
    batch = engine_greedy(setup, eos, G)
    P = len(ref)
    assert batch.num_generations == G
    assert batch.completion_ids.shape == (P * G, MAX_NEW)  # some row ran to max_new_tokens
    assert torch.equal(batch.completion_ids, expected_rows(ref, eos, G, MAX_NEW))
    # G identical greedy rows per prompt, in prompt order (row r belongs to prompt r // G)
    for p in range(P):
        rows = batch.completion_ids[p * G: (p + 1) * G]
        assert (rows == rows[0]).all()
    assert len(batch.texts) == P * G


def test_completion_mask_and_truncated(setup, eos_and_reference):
    eos, ref = eos_and_reference
    batch = engine_greedy(setup, eos, 2)
    for r, ids in enumerate(batch.completion_ids.tolist()):
        hf = ref[r // 2]
        stopped = eos in hf
        assert bool(batch.truncated[r]) == (not stopped)
        n = hf.index(eos) + 1 if stopped else MAX_NEW  # the first EOS itself is scored
        assert batch.completion_mask[r].tolist() == [1] * n + [0] * (MAX_NEW - n)
        assert ids[n:] == [eos] * (MAX_NEW - n)  # right-padded with EOS
    assert torch.equal(batch.lengths, batch.completion_mask.sum(-1))
    assert batch.stats["new_tokens"] == int(batch.completion_mask.sum())


def test_sampling_is_seeded(setup):
    model, processor, prompts, embeds = setup
    engine = RolloutEngine(model, processor)
    params = SamplingParams(num_generations=4, max_new_tokens=8, temperature=1.0, top_k=50, top_p=0.95)

    def run(seed):
        return engine.generate(prompts, embeds, params, torch.Generator().manual_seed(seed)).completion_ids

    a, b, c = run(123), run(123), run(124)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # the G samples of a prompt differ from each other (one shared prefill, independent draws)
    assert len({tuple(r) for r in a[:4].tolist()}) > 1


@pytest.mark.parametrize("budget", [1, "two_chunks"])
def test_token_budget_chunking_is_invisible(setup, eos_and_reference, budget):
    eos, ref = eos_and_reference
    model, processor, prompts, embeds = setup
    G = 2
    if budget == "two_chunks":  # the first two prompts together, the third alone
        n_vid = embeds.shape[1]
        cost = [G * (len(p) - 1 + n_vid + MAX_NEW) for p in prompts]
        budget = cost[0] + cost[1]
    engine = RolloutEngine(model, processor, eos_token_id=eos)
    params = SamplingParams(num_generations=G, max_new_tokens=MAX_NEW, temperature=0.0, token_budget=budget)
    assert len(engine._chunks(prompts, embeds.shape[1], params)) >= 2
    chunked = engine.generate(prompts, embeds, params)
    whole = engine_greedy(setup, eos, G)
    assert torch.equal(chunked.completion_ids, whole.completion_ids)
    assert torch.equal(chunked.completion_mask, whole.completion_mask)
    assert torch.equal(chunked.truncated, whole.truncated)


def test_compaction_is_invisible(setup, eos_and_reference):
    eos, ref = eos_and_reference
    every_step = engine_greedy(setup, eos, 3, compact_every=1)
    never = engine_greedy(setup, eos, 3, compact_every=0)
    assert torch.equal(every_step.completion_ids, never.completion_ids)
    assert torch.equal(every_step.completion_ids, expected_rows(ref, eos, 3, MAX_NEW))


def test_all_rows_stop_early(setup, eos_and_reference):
    """When every row has emitted EOS the loop ends: the width is the longest completion."""
    eos, ref = eos_and_reference
    model, processor, prompts, embeds = setup
    stopped = [i for i, r in enumerate(ref) if len(r) < MAX_NEW]
    i = stopped[0]
    engine = RolloutEngine(model, processor, eos_token_id=eos)
    params = SamplingParams(num_generations=2, max_new_tokens=MAX_NEW, temperature=0.0, compact_every=1)
    batch = engine.generate([prompts[i]], embeds[i: i + 1], params)
    assert batch.completion_ids.shape == (2, len(ref[i]))
    assert batch.completion_ids[0].tolist() == ref[i]
    assert not batch.truncated.any()



@pytest.mark.parametrize("compact_every", [1, 0])
def test_greedy_rows_decode_greedily_and_leave_the_samples_alone(setup, eos_and_reference, compact_every):
    """greedy_rows=1: the first row of each group is the HF greedy continuation, with or without
    compaction. Without compaction the other rows are the very samples a run without greedy rows
    draws (every row draws from the generator each step); with it, the rows dropped can differ."""
    eos, ref = eos_and_reference
    model, processor, prompts, embeds = setup
    engine = RolloutEngine(model, processor, eos_token_id=eos)
    G = 4
    kw = dict(num_generations=G, max_new_tokens=MAX_NEW, temperature=1.0, top_k=50, compact_every=compact_every)
    mixed = engine.generate(prompts, embeds, SamplingParams(greedy_rows=1, **kw), torch.Generator().manual_seed(5))
    plain = engine.generate(prompts, embeds, SamplingParams(**kw), torch.Generator().manual_seed(5))
    for p, r in enumerate(ref):
        row = mixed.completion_ids[p * G].tolist()
        assert row[: len(r)] == r and set(row[len(r):]) <= {eos}
        for j in range(1, G if not compact_every else 1):  # sampled rows, up to their own first eos
            n = int(plain.completion_mask[p * G + j].sum())
            assert mixed.completion_ids[p * G + j, :n].tolist() == plain.completion_ids[p * G + j, :n].tolist()
    # the sampled rows are not all greedy themselves (the test would prove nothing otherwise)
    assert any(plain.completion_ids[p * G].tolist()[: len(r)] != r for p, r in enumerate(ref))

# --- text-only prompts (no video, no placeholder) ------------------------------------------------


def _text_prompts(setup):
    model, processor, prompts, _ = setup
    placeholder = model.config.image_token_index
    return [[t for t in p if t != placeholder] for p in prompts]


def hf_lm_greedy(lm, prompt, eos, max_new=MAX_NEW):
    """`generate(do_sample=False)` of the bare language model on a batch of one (new tokens only)."""
    out = lm.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                      max_new_tokens=max_new, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("G", [1, 3])
def test_text_only_greedy_equals_bare_lm_generate(setup, G):
    model, processor, _, _ = setup
    lm = model.language_model
    prompts = _text_prompts(setup)
    assert len({len(p) for p in prompts}) == len(prompts)  # left padding at work here too
    free = [hf_lm_greedy(lm, p, eos=-1) for p in prompts]
    assert any(len(set(f)) > 3 for f in free)
    # an EOS that stops one prompt early and never appears in another (rows of both kinds)
    eos = next(f[t] for i, f in enumerate(free) for t in range(2, MAX_NEW - 3)
               if f[t] not in f[:t] and any(f[t] not in free[j] for j in range(len(free)) if j != i))
    ref = [hf_lm_greedy(lm, p, eos=eos) for p in prompts]
    assert min(len(r) for r in ref) < MAX_NEW and max(len(r) for r in ref) == MAX_NEW
    engine = RolloutEngine(model, processor, eos_token_id=eos)
    params = SamplingParams(num_generations=G, max_new_tokens=MAX_NEW, temperature=0.0, compact_every=1)
    batch = engine.generate(prompts, None, params)
    assert torch.equal(batch.completion_ids, expected_rows(ref, eos, G, MAX_NEW))
    assert batch.truncated.tolist() == [eos not in r for r in ref for _ in range(G)]


def test_text_only_prompt_with_placeholder_is_refused(setup):
    from tinyvr.model.modeling import VideoTokenError

    model, processor, prompts, _ = setup
    engine = RolloutEngine(model, processor)
    with pytest.raises(VideoTokenError, match="placeholder"):
        engine.generate(prompts, None, SamplingParams(num_generations=1, max_new_tokens=2))


def test_text_only_sampling_and_token_budget(setup):
    """Seeded sampling on text-only prompts; chunking by token budget does not change the result."""
    model, processor, _, _ = setup
    prompts = _text_prompts(setup)
    engine = RolloutEngine(model, processor)

    def run(**kw):
        params = SamplingParams(num_generations=2, max_new_tokens=6, temperature=0.0, **kw)
        return engine.generate(prompts, None, params).completion_ids

    whole = run()
    budget = 2 * (len(prompts[0]) + 6)  # the first prompt alone fits
    assert len(engine._chunks(prompts, 0, SamplingParams(num_generations=2, max_new_tokens=6,
                                                         token_budget=budget))) >= 2
    assert torch.equal(run(token_budget=budget), whole)
    sp = SamplingParams(num_generations=4, max_new_tokens=8, temperature=1.0, top_k=50, top_p=0.95)
    a = engine.generate(prompts, None, sp, torch.Generator().manual_seed(5)).completion_ids
    b = engine.generate(prompts, None, sp, torch.Generator().manual_seed(5)).completion_ids
    assert torch.equal(a, b)


# --- the decode step without transformers' per-call wrappers -------------------------------------


def _prefill(lm, prompts, capacity):
    from transformers import DynamicCache

    from tinyvr.rl.rollout import _preallocate

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    pos = (attn.cumsum(-1) - 1).masked_fill(attn == 0, 0)
    cache = DynamicCache(config=lm.config)
    out = lm(input_ids=ids, attention_mask=attn, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
    _preallocate(out.cache, capacity)
    return out.cache, attn, pos[:, -1:] + 1, out.logits[:, -1]


@pytest.mark.parametrize("padded", [False, True])
def test_fast_decode_step_is_bit_identical_to_the_lm_forward(setup, padded):
    from tinyvr.rl.rollout import _Qwen2DecodeStep

    model, _, _, _ = setup
    lm = model.language_model
    prompts = _text_prompts(setup)
    prompts = prompts if padded else [prompts[0], prompts[0][::-1]]  # equal lengths: no mask at all
    steps = 6
    fast = _Qwen2DecodeStep.build(lm, max(len(p) for p in prompts) + steps + 1)
    assert fast is not None  # the tiny preset's LM takes the fast path
    with torch.no_grad():
        cache_a, attn, pos, logits = _prefill(lm, prompts, 64)
        cache_b = _prefill(lm, prompts, 64)[0]
        tok = logits.argmax(-1)
        for _ in range(steps):
            if padded:
                attn = torch.cat([attn, attn.new_ones(len(prompts), 1)], dim=1)
            mask = attn if padded else None
            a = fast(tok, mask, pos, cache_a)
            b = lm(input_ids=tok[:, None], attention_mask=mask, position_ids=pos, cache=cache_b,
                   use_cache=True).logits[:, -1]
            assert torch.equal(a, b)
            tok, pos = a.argmax(-1), pos + 1
    for la, lb in zip(cache_a.layers, cache_b.layers):
        assert torch.equal(la.keys, lb.keys) and torch.equal(la.values, lb.values)


def test_fast_decode_step_stands_aside_for_hooks(setup, eos_and_reference):
    """A hook on a module whose forward the fast step replaces (FSDP, a profiler) -> the LM's forward."""
    from tinyvr.rl.rollout import _Qwen2DecodeStep

    model, _, _, _ = setup
    lm = model.language_model
    calls = []
    handle = lm.model.layers[0].register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        assert _Qwen2DecodeStep.build(lm, 32) is None
        eos, ref = eos_and_reference
        batch = engine_greedy(setup, eos, 2)
    finally:
        handle.remove()
    assert len(calls) > 1  # prefill and decode steps went through the hooked layer
    assert torch.equal(batch.completion_ids, expected_rows(ref, eos, 2, MAX_NEW))
    assert _Qwen2DecodeStep.build(lm, 32) is not None
