"""grpo_step: one whole GRPO step (1 prompt x G = 8 completions), seconds per step.

tinyvr: the real pieces of `recipes/grpo.py`: the frozen tower once for the prompt's video (a
first-epoch step: feature cache cold), `RolloutEngine.generate`, rewards, group advantages, then
`grpo_update` (reference log-probs, connector-only recompute, `completion_logprobs` with
logits_to_keep, k3 KL, backward, clip, AdamW).

Original (a faithful re-creation of spec 6.2 on the same model): 8 sequential
`generate(do_sample=True)` calls, each re-encoding the video from pixels; the policy forward over
[8, full] with the video through the tower again for all 8 rows, full-vocabulary logits at every
position and a per-row log_softmax (`_get_per_token_logps`); the same for the reference under
inference_mode; k3 KL, reward, advantages + noise, loss, backward, clip, AdamW. (It runs only the
SigLIP layers that are needed, like tinyvr; the original ran them all, so it is a little
flattered here.)

TRL: `trl.GRPOTrainer` on the same tiny Qwen2 LLM (saved to a folder because beta > 0 makes TRL
reload the reference by path), text only: the same question without the video, G = 8, same
lengths, beta 0.01, loss_type "grpo", AdamW, no gradient checkpointing. The tinyvr side of this
comparison is like for like: the same weights (its own copies of the model and reference), TRL's
prompt tokens exactly (76, no placeholder), `pixels=None` so no tower and no video tokens, and the
same recipe pieces as above (RolloutEngine on a text-only prompt, rewards, advantages,
`grpo_update` with its reference pass). A TrainerCallback times each TRL step (on_step_begin ->
on_step_end, wall and process CPU time) and runs one tinyvr step after it, so the two are
interleaved.

EOS is masked during generation on every side (benchlib.no_eos): every completion has exactly
`max_new_tokens` tokens.
"""

from __future__ import annotations

import copy
import tempfile
import time
from types import SimpleNamespace

import benchlib as B

TARGET = 4.0  # vs the original
TRL_TARGET = 1.0  # tinyvr faster per step than TRL
NUM_PROMPTS = 4  # rounds cycle through them; the batched variant takes all 4 in one step
TRL_REPEATS, TRL_REPEATS_QUICK = 6, 2  # timed TRL steps (each followed by a tinyvr step), after a warm-up pair


def _build(quick: bool):
    torch = B.setup_torch(0)
    from tinyvr.config import load_config

    new_tokens = 64 if quick else 128
    model, processor = B.tiny_model()
    cfg = load_config(B.ROOT / "configs/tiny/grpo.yaml",
                      [f"rollout.max_new_tokens={new_tokens}", "optim.batch_size=1", "run.progress=false"])
    prompts = B.prompt_ids(processor, NUM_PROMPTS)
    pixels = B.random_videos(model, NUM_PROMPTS)
    return torch, cfg, model, processor, prompts, pixels, new_tokens


def make_tinyvr_step(cfg, model0, processor, prompts, pixels, seed=0):
    """`step(indices, new_tokens=None)`: one tinyvr GRPO step on the prompts `indices` (its own copy
    of the model, reference, optimizer). `pixels=None`: text-only prompts (no placeholder, no video
    tower, no video tokens; the rollout and update get no video)."""
    import torch

    from tinyvr.recipes.common import Timer, build_optimizer, build_scheduler
    from tinyvr.recipes.grpo import compute_rewards, grpo_update
    from tinyvr.rl.advantages import group_advantages
    from tinyvr.rl.rollout import RolloutEngine, SamplingParams
    from tinyvr.utils.distributed import DistEnv

    model = copy.deepcopy(model0)
    ref = copy.deepcopy(model0).eval().requires_grad_(False)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, 1000)
    ctx = SimpleNamespace(dist=DistEnv())
    timer = Timer()
    engine = RolloutEngine(model, processor)
    G = cfg.rollout.num_generations
    gen = torch.Generator().manual_seed(seed)
    eos = processor.eos_token_id
    phases = []

    def step(indices, new_tokens=None):
        sampling = SamplingParams(num_generations=G, max_new_tokens=new_tokens or cfg.rollout.max_new_tokens,
                                  temperature=cfg.rollout.temperature, top_k=cfg.rollout.top_k,
                                  top_p=cfg.rollout.top_p)
        rows = [SimpleNamespace(problem=B.QUESTIONS[i % len(B.QUESTIONS)],
                                solution=B.SOLUTIONS[i % len(B.SOLUTIONS)], columns={}) for i in indices]
        prompt_ids = [prompts[i] for i in indices]
        t0 = time.perf_counter()
        feats = None
        if pixels is not None:
            with torch.no_grad():
                feats = model.vision_features(pixels[indices])  # frozen tower, once per video
        model.eval()
        with torch.no_grad(), B.no_eos(model.language_model, eos):
            roll = engine.generate(prompt_ids, None if feats is None else model.connector(feats), sampling, gen)
        model.train()
        t_roll = time.perf_counter() - t0
        parts = compute_rewards(cfg, roll.texts, rows, G)
        rewards = torch.tensor(parts["total"], dtype=torch.float32)
        adv = group_advantages(rewards, G, scale=cfg.rl.scale_rewards, eps=cfg.rl.adv_eps,
                               noise_std=cfg.rl.noise_std, generator=gen)
        batch_p = processor.collate([{"input_ids": p} for p in prompt_ids], padding_side="left")
        batch = (feats, batch_p["input_ids"].repeat_interleave(G, 0),
                 batch_p["attention_mask"].repeat_interleave(G, 0), roll.completion_ids)
        grpo_update(model, ref, batch, adv, roll.completion_mask, cfg, optimizer, scheduler, ctx, timer)
        phases.append({"rollout_s": round(t_roll, 4), **{f"{k}_s": round(v, 4) for k, v in timer.pop().items()}})
        return int(roll.completion_mask.sum())

    step.phases = phases
    return step


def make_original_step(cfg, model0, processor, prompts, pixels, seed=0):
    """`step(i, new_tokens=None)`: one step on prompt i the way the original trainer did (spec 6.2)."""
    import torch

    from tinyvr.rl.rewards import tinyllava_r1_reward

    model = copy.deepcopy(model0)
    ref = copy.deepcopy(model0).eval().requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                                  weight_decay=cfg.optim.weight_decay)
    G, beta = cfg.rollout.num_generations, cfg.rl.beta
    eos = processor.eos_token_id
    gen = torch.Generator().manual_seed(seed)
    phases = []

    def per_token_logps(m, full_ids, video, lc):
        logits = m(input_ids=full_ids, pixel_values=video).logits  # [G, L', V]: every position
        logits = logits[:, :-1]
        out = []
        for logits_row, ids_row in zip(logits, full_ids[:, -lc:]):  # the original's per-row loop
            log_probs = logits_row.log_softmax(dim=-1)  # full vocabulary, every position
            out.append(torch.gather(log_probs[-lc:], 1, ids_row.unsqueeze(1)).squeeze(1))
        return torch.stack(out)

    def step(i, new_tokens=None):
        n_new = new_tokens or cfg.rollout.max_new_tokens
        input_ids = torch.tensor([prompts[i]])
        video_1 = pixels[i: i + 1]
        t0 = time.perf_counter()
        completions = []
        with torch.no_grad(), B.no_eos(model.language_model, eos):
            for _ in range(G):  # 8 sequential calls, each re-encoding the video
                out = model.generate(input_ids, pixel_values=video_1, do_sample=True, num_beams=1,
                                     temperature=cfg.rollout.temperature, top_k=cfg.rollout.top_k,
                                     top_p=cfg.rollout.top_p, max_new_tokens=n_new, use_cache=True,
                                     pad_token_id=eos, eos_token_id=eos)
                processor.batch_decode(out)  # decoded for nothing, as the original
                completions.append(out[0])
        t_roll = time.perf_counter() - t0
        lc = max(len(c) for c in completions)
        C = torch.full((G, lc), eos, dtype=torch.long)
        for i, c in enumerate(completions):
            C[i, : len(c)] = c
        is_eos = C == eos
        eos_idx = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full((G,), lc))
        mask = (torch.arange(lc)[None] <= eos_idx[:, None]).int()
        full_ids = torch.cat([input_ids.expand(G, -1), C], dim=1)
        video = video_1.repeat(G, 1, 1, 1, 1)
        t1 = time.perf_counter()
        logp = per_token_logps(model, full_ids, video, lc)
        with torch.inference_mode():
            ref_logp = per_token_logps(ref, full_ids, video, lc)
        ref_logp = ref_logp.clone()
        t2 = time.perf_counter()
        kl = (torch.exp(ref_logp - logp) - (ref_logp - logp) - 1).clamp(-100, 100)
        texts = [t.strip() for t in processor.batch_decode(C, skip_special_tokens=True)]
        solution = B.SOLUTIONS[i % len(B.SOLUTIONS)]
        rewards = torch.tensor(tinyllava_r1_reward(texts, [solution] * G, compat="reference"))
        adv = (rewards - rewards.mean()) / (rewards.std() + 1e-4)
        adv = adv + 0.02 * torch.randn(G, generator=gen)
        loss = -(torch.exp(logp - logp.detach()) * adv[:, None] - beta * kl)
        loss = ((loss * mask).sum(1) / mask.sum(1)).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        phases.append({"rollout_s": round(t_roll, 4), "logprobs_s": round(t2 - t1, 4),
                       "loss_backward_step_s": round(time.perf_counter() - t2, 4)})
        return int(mask.sum())

    step.phases = phases
    return step


def run_trl(cfg, model0, processor, prompt_text, tinyvr_step, steps: int, work_dir):
    """TRL GRPOTrainer steps, each followed by one tinyvr step. Returns (trl_times, tinyvr_times, info)."""
    import torch
    from datasets import Dataset
    from transformers import Qwen2ForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from tinyvr.rl.rewards import tinyllava_r1_reward

    folder = work_dir / "llm"
    model0.language_model.save_pretrained(folder)
    processor.tokenizer.save_pretrained(folder)
    llm = Qwen2ForCausalLM.from_pretrained(folder, dtype=torch.float32)  # _name_or_path = folder
    eos = processor.eos_token_id
    G = cfg.rollout.num_generations
    args = GRPOConfig(
        output_dir=str(work_dir / "out"), use_cpu=True, report_to="none", bf16=False,
        per_device_train_batch_size=G, num_generations=G, max_completion_length=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature, top_k=cfg.rollout.top_k, top_p=cfg.rollout.top_p,
        beta=cfg.rl.beta, loss_type="grpo", scale_rewards="group", learning_rate=cfg.optim.lr,
        optim="adamw_torch", max_grad_norm=cfg.optim.max_grad_norm, lr_scheduler_type="constant",
        gradient_checkpointing=False, max_steps=steps + 1, logging_steps=1, save_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )
    data = Dataset.from_dict({"prompt": [prompt_text] * (steps + 1),
                              "solution": [B.SOLUTIONS[0]] * (steps + 1)})

    def reward(completions, solution, **kw):
        return tinyllava_r1_reward(completions, solution, compat="reference")

    trl_times, tinyvr_times, trl_cpu, tinyvr_cpu, completion_tokens = [], [], [], [], []

    class Interleave(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.c0, self.t0 = time.process_time(), time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            trl_times.append(round(time.perf_counter() - self.t0, 4))
            trl_cpu.append(round(time.process_time() - self.c0, 4))
            c, t = time.process_time(), time.perf_counter()
            n = tinyvr_step([0])
            tinyvr_times.append(round(time.perf_counter() - t, 4))
            assert n == G * cfg.rollout.max_new_tokens, n  # the same number of new tokens as TRL
            tinyvr_cpu.append(round(time.process_time() - c, 4))

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                completion_tokens.append(logs["completions/mean_length"])

    trainer = GRPOTrainer(model=llm, reward_funcs=reward, args=args, train_dataset=data,
                          processing_class=processor.tokenizer, callbacks=[Interleave()])
    assert trainer.ref_model is not None  # beta > 0: TRL computes reference log-probs too
    with B.no_eos(llm, eos):
        trainer.train()
    # the first step of each side is the warm-up
    assert all(n == cfg.rollout.max_new_tokens for n in completion_tokens), completion_tokens
    info = {"trl_version": __import__("trl").__version__, "mean_completion_length": completion_tokens,
            "prompt_tokens": len(processor.tokenizer(prompt_text)["input_ids"]),
            "cpu_s": trl_cpu[1:], "tinyvr_cpu_s": tinyvr_cpu[1:]}
    return trl_times[1:], tinyvr_times[1:], info


def run(quick: bool = False) -> dict:
    torch, cfg, model, processor, prompts, pixels, new_tokens = _build(quick)
    repeats = 2 if quick else 4
    G, P = cfg.rollout.num_generations, NUM_PROMPTS
    tinyvr_step = make_tinyvr_step(cfg, model, processor, prompts, pixels)
    batched_step = make_tinyvr_step(cfg, model, processor, prompts, pixels)
    original_step = make_original_step(cfg, model, processor, prompts, pixels)
    warm = 4  # warm-up calls generate 4 tokens
    fns = {  # round r uses prompt r % P on the one-prompt sides
        "tinyvr": lambda r: tinyvr_step([max(r, 0) % P], warm if r < 0 else None),
        "original": lambda r: original_step(max(r, 0) % P, warm if r < 0 else None),
        "tinyvr_4_prompts": lambda r: batched_step(list(range(P)), warm if r < 0 else None),
    }
    torch.manual_seed(0)
    times = B.interleaved(fns, repeats)
    for k, runs in times.items():
        rows = P * G if k == "tinyvr_4_prompts" else G
        assert all(n == rows * new_tokens for n in runs["results"]), (k, runs["results"])
    res = {k: B.summary(v) for k, v in times.items()}
    for k, step in (("tinyvr", tinyvr_step), ("original", original_step), ("tinyvr_4_prompts", batched_step)):
        res[k]["phases"] = step.phases[1:]  # without the warm-up
    ratio = res["original"]["median_wall_s"] / res["tinyvr"]["median_wall_s"]
    ratio_cpu = res["original"]["median_cpu_s"] / res["tinyvr"]["median_cpu_s"]
    per_prompt_4 = res["tinyvr_4_prompts"]["median_wall_s"] / P
    ratio_4 = res["original"]["median_wall_s"] / per_prompt_4
    print(f"grpo_step: 1 prompt x G={G} x {new_tokens} tokens: tinyvr {res['tinyvr']['median_wall_s']:.2f} s, "
          f"original {res['original']['median_wall_s']:.2f} s -> {ratio:.2f}x (target >= {TARGET}x; "
          f"by CPU time {ratio_cpu:.2f}x)")
    print(f"grpo_step: tinyvr with {P} prompts per step (configs/tiny/grpo.yaml): {per_prompt_4:.2f} s per prompt "
          f"-> {ratio_4:.2f}x the original's per-prompt step")

    # --- TRL -----------------------------------------------------------------------------------
    trl = {"target": TRL_TARGET}
    try:
        from pathlib import Path

        from tinyvr.data import template

        prompt_text = template.build_prompt(
            template.GRPO_QUESTION_TEMPLATE.format(Question=B.QUESTIONS[0])).replace("<image>\n", "")
        # tinyvr on exactly TRL's prompt tokens (TRL tokenizes a plain-text prompt this way), no video
        text_ids = processor.tokenizer(text=prompt_text)["input_ids"]
        B.OUT_DIR.mkdir(parents=True, exist_ok=True)
        text_step = make_tinyvr_step(cfg, model, processor, [text_ids], None, seed=1)
        with tempfile.TemporaryDirectory(dir=B.OUT_DIR) as tmp:
            trl_times, tv_times, info = run_trl(cfg, model, processor, prompt_text, text_step,
                                                TRL_REPEATS_QUICK if quick else TRL_REPEATS, Path(tmp))
        assert info["prompt_tokens"] == len(text_ids), (info["prompt_tokens"], len(text_ids))
        ratio_trl = B.median(trl_times) / B.median(tv_times)
        trl.update({"step_s": trl_times, "median_step_s": B.median(trl_times), "tinyvr_step_s": tv_times,
                    "tinyvr_median_step_s": B.median(tv_times), "ratio": ratio_trl,
                    "ratio_cpu_time": B.median(info["cpu_s"]) / B.median(info["tinyvr_cpu_s"]),
                    "passed": ratio_trl > TRL_TARGET, **info, "tinyvr_phases": text_step.phases[1:],
                    "note": "like for like: both sides run the text-only LLM on the same "
                            f"{len(text_ids)} prompt tokens (tinyvr without video, pixels=None), G={G}, "
                            f"{new_tokens} new tokens, beta {cfg.rl.beta}, reference pass, AdamW"})
        print(f"grpo_step vs TRL GRPOTrainer {info['trl_version']} (both text only, 1 prompt x G={G}): tinyvr "
              f"{trl['tinyvr_median_step_s']:.2f} s, TRL {trl['median_step_s']:.2f} s -> {ratio_trl:.2f}x "
              f"(target: > {TRL_TARGET}x, tinyvr faster; by CPU time {trl['ratio_cpu_time']:.2f}x)")
    except Exception as e:  # not installed / API drift: recorded, never faked
        import traceback

        traceback.print_exc()
        trl.update({"ratio": None, "passed": None, "error": f"{type(e).__name__}: {e}"})
        print(f"grpo_step vs TRL: could not run TRL ({trl['error']})")

    passed = ratio >= TARGET and trl.get("passed") is not False
    return {
        "ratio": ratio, "target": TARGET, "passed": passed,
        "unit": "seconds per step of 1 prompt x G (ratio = original / tinyvr)",
        "ratio_cpu_time": ratio_cpu,
        "ratio_4_prompts_per_step": ratio_4,
        "tinyvr": res["tinyvr"], "baseline": res["original"], "tinyvr_4_prompts": res["tinyvr_4_prompts"],
        "trl": trl,
        "setup": {"prompts_per_step": 1, "num_generations": G, "max_new_tokens": new_tokens, "repeats": repeats,
                  "beta": cfg.rl.beta, "model": "tiny preset, random init, fp32",
                  "rounds": f"round r uses prompt r % {P} on both one-prompt sides",
                  "eos": "masked on every side during generation (fixed length)"},
    }
