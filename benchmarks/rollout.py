"""rollout: G = 8 completions for each of P prompts, new tokens per second.

tinyvr: the frozen tower runs once per prompt, then `RolloutEngine.generate` (one prefill per
prompt, KV cache expanded xG, one batched decode of P*G rows).
Original (spec 6.2 step 2, 10.1 items 1-2): for every prompt, 8 sequential
`model.generate(do_sample=True)` calls of batch 1, each re-encoding the video from pixel values
(tower + resampler) and decoding its text.
Also measured (not the headline): the engine called once per prompt (P = 1, G = 8).
Same tiny model, same prompts and videos, T = 1.0, top-k 50, top-p 1.0. EOS is masked on both
sides (benchlib.no_eos) so every completion has exactly `max_new_tokens` tokens.
"""

from __future__ import annotations

import benchlib as B

TARGET = 5.0


def run(quick: bool = False) -> dict:
    torch = B.setup_torch(0)
    from tinyvr.rl.rollout import RolloutEngine, SamplingParams

    P, G = 4, 8
    new_tokens = 64 if quick else 128
    repeats = 2 if quick else 3
    model, processor = B.tiny_model()
    eos = processor.eos_token_id
    prompts = B.prompt_ids(processor, P)
    pixels = B.random_videos(model, P)
    engine = RolloutEngine(model, processor)
    params = SamplingParams(num_generations=G, max_new_tokens=new_tokens, temperature=1.0, top_k=50, top_p=1.0)
    warm = SamplingParams(num_generations=G, max_new_tokens=4)
    gen = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def tinyvr(r):
        embeds = model.encode_video(pixels)  # once per prompt
        batch = engine.generate(prompts, embeds, params if r >= 0 else warm, gen)
        return int(batch.completion_mask.sum())

    @torch.no_grad()
    def tinyvr_per_prompt(r):  # the engine one prompt at a time (the original's 1 prompt per device)
        embeds = model.encode_video(pixels)
        return sum(int(engine.generate([ids], embeds[i: i + 1], params if r >= 0 else warm,
                                       gen).completion_mask.sum())
                   for i, ids in enumerate(prompts))

    @torch.no_grad()
    def original(r):
        n = 0
        for i, ids in enumerate(prompts):
            x = torch.tensor([ids])
            for _ in range(G):
                out = model.generate(x, pixel_values=pixels[i: i + 1], do_sample=True, num_beams=1,
                                     temperature=1.0, top_k=50, top_p=1.0, max_new_tokens=new_tokens if r >= 0 else 4,
                                     use_cache=True, pad_token_id=eos, eos_token_id=eos)
                processor.batch_decode(out)  # the original decodes each output
                n += out.shape[1]
        return n

    torch.manual_seed(0)
    with B.no_eos(model.language_model, eos):
        times = B.interleaved({"tinyvr": tinyvr, "original": original,
                                  "tinyvr_per_prompt": tinyvr_per_prompt}, repeats)
    res = {}
    for k, runs in times.items():
        tokens = runs["results"][0]
        assert all(t == P * G * new_tokens for t in runs["results"]), (k, runs["results"])
        res[k] = B.summary(runs, tokens, "tokens")
    ratio = res["tinyvr"]["tokens_per_s"] / res["original"]["tokens_per_s"]
    ratio_cpu = res["tinyvr"]["tokens_per_cpu_s"] / res["original"]["tokens_per_cpu_s"]
    print(f"rollout: P={P} prompts x G={G} x {new_tokens} new tokens: tinyvr "
          f"{res['tinyvr']['tokens_per_s']:.0f} tok/s, original {res['original']['tokens_per_s']:.0f} tok/s "
          f"-> {ratio:.2f}x (target >= {TARGET}x; by CPU time {ratio_cpu:.2f}x)")
    return {
        "ratio": ratio, "target": TARGET, "passed": ratio >= TARGET, "unit": "new tokens/s",
        "ratio_cpu_time": ratio_cpu,
        "tinyvr": res["tinyvr"], "baseline": res["original"],
        "tinyvr_one_prompt_per_call": res["tinyvr_per_prompt"],
        "ratio_one_prompt_per_call": res["tinyvr_per_prompt"]["tokens_per_s"] / res["original"]["tokens_per_s"],
        "setup": {"prompts": P, "num_generations": G, "max_new_tokens": new_tokens, "repeats": repeats,
                  "model": "tiny preset, random init, fp32", "sampling": "T=1.0 top_k=50 top_p=1.0",
                  "eos": "masked on both sides (fixed length)"},
    }
