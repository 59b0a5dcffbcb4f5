"""GRPO, the TinyLLaVA-Video-R1 recipe (configs/tiny/grpo.yaml, configs/tinyllava_video_r1/grpo.yaml).

One step, as the paper describes it and as this file reads:

    prompts -> encode videos once (frozen tower, cached) -> rollout: G completions per prompt
    -> rewards (accuracy, format with length term, wrong-answer penalty) -> group advantages + noise
    -> per-token loss with KL to the frozen reference -> backward, clip, step -> log, checkpoint

Before the first step, `data.family_probe` (optional) keeps only the question families the starting
model already answers above chance (`tinyvr.rl.family_probe`).

Departures from the original, all configurable (spec section 10): several prompts per step; one
batched generation per prompt group with the video encoded once; no reference pass when beta = 0;
rewards that cannot be gamed (`rl.reward_compat: reference` restores the original's numbers).
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tinyvr.config import TrainConfig
from tinyvr.data.datasets import BadSampleTracker, load_grpo_jsonl, select_families
from tinyvr.data.feature_cache import VideoInputs
from tinyvr.data.template import GRPO_QUESTION_TEMPLATE
from tinyvr.errors import TinyVRError
from tinyvr.model import set_trainable
from tinyvr.recipes.common import (DataOrder, Timer, build_optimizer, build_scheduler, finish_stage,
                                   load_or_create, setup_run, total_steps)
from tinyvr.recipes.validate import preflight
from tinyvr.recipes.resume import restore_training, save_checkpoint
from tinyvr.rl.advantages import group_advantages, zero_std_groups
from tinyvr.rl.family_probe import probe_families
from tinyvr.rl.loss import mask_truncated, policy_loss
from tinyvr.rl.policy import completion_logprobs
from tinyvr.rl.rewards import accuracy_reward, get_reward_fn, tinyllava_r1_reward_breakdown
from tinyvr.rl.rollout import RolloutEngine, SamplingParams
from tinyvr.utils.distributed import (all_ranks, backward, clip_and_step, gathered, init_deepspeed,
                                      reduce_metrics, shard_model, zero_grad)
from tinyvr.utils.logging import JsonlWriter, banner, info


def next_prompts(rows, order, videos, tracker, size):
    """`size` prompts whose videos decode, with their frozen-tower features [P, N', C]."""
    picked, feats = [], []
    while len(picked) < size:
        row = rows[order.next()]
        try:
            f = videos([row.video_path])["video_features"]
        except TinyVRError as e:
            tracker.bad(e)
            info(f"skipped prompt {row.index}: {e}")
            continue
        tracker.ok()
        picked.append(row)
        feats.append(f)
    return picked, torch.cat(feats)


def compute_rewards(cfg: TrainConfig, texts, rows, G):
    """Per-completion total reward and its components (lists of floats, len P*G)."""
    columns = {k: [r.columns.get(k) for r in rows for _ in range(G)] for k in rows[0].columns}
    columns["problem"] = [r.problem for r in rows for _ in range(G)]
    solution = [r.solution for r in rows for _ in range(G)]
    if cfg.rl.reward == "tinyllava_r1":
        parts = tinyllava_r1_reward_breakdown(
            texts, solution, compat=cfg.rl.reward_compat, length_scale=cfg.rl.length_scale,
            wrong_penalty=cfg.rl.wrong_penalty, zero_value=cfg.rl.zero_value,
            continuous_length=cfg.rl.continuous_length, **columns)
    else:
        parts = {"total": list(get_reward_fn(cfg.rl.reward)(texts, solution=solution, **columns))}
    total = list(parts["total"])
    for name in cfg.rl.extra_rewards:
        extra = get_reward_fn(name)(texts, solution=solution, **columns)
        parts[name] = list(extra)
        total = [t + e for t, e in zip(total, extra)]
    parts["total"] = total
    return parts


def greedy_scorer(cfg: TrainConfig, model, processor, engine, videos):
    """rows -> greedy accuracy of each (1.0 / 0.0; None when its video does not decode): the
    starting policy's answers to the training prompts, for the family probe."""
    params = SamplingParams(num_generations=1, max_new_tokens=cfg.rollout.max_new_tokens, temperature=0.0,
                            top_k=0, top_p=1.0, token_budget=cfg.rollout.token_budget)

    def answer(rows):
        scores = [None] * len(rows)
        for start in range(0, len(rows), cfg.eval.batch_size):
            idx, feats = [], []
            for i in range(start, min(start + cfg.eval.batch_size, len(rows))):
                try:
                    feats.append(videos([rows[i].video_path])["video_features"])
                    idx.append(i)
                except TinyVRError as e:  # the training loop meets this row again and counts it
                    info(f"family probe: skipped prompt {rows[i].index}: {e}")
            if not idx:
                continue
            prompts = [processor.encode_prompt(GRPO_QUESTION_TEMPLATE.format(Question=rows[i].problem)) for i in idx]
            with torch.no_grad(), gathered(model):
                # a generator of its own: the probe must not shift the training run's random stream
                roll = engine.generate(prompts, model.connector(torch.cat(feats)), params, torch.Generator())
            acc = accuracy_reward(roll.texts, [rows[i].solution for i in idx], compat=cfg.rl.reward_compat,
                                  options=[rows[i].columns.get("options") for i in idx])
            for i, a in zip(idx, acc):
                scores[i] = a
        return scores

    return answer


def choose_families(cfg: TrainConfig, rows, model, processor, engine, videos, ctx, *, resuming: bool):
    """`data.family_probe`: the rows of the families the starting model answers above chance. The
    choice is made once, from the starting model, and read back from family_probe.json on resume:
    the restored prompt order indexes these rows, and greedy decoding need not repeat bit for bit
    on a GPU."""
    path = ctx.out_dir / "family_probe.json"
    if resuming and path.is_file():
        result = json.loads(path.read_text())
        info(f"family probe: reusing {path}")
    else:
        model.eval()
        result = probe_families(rows, greedy_scorer(cfg, model, processor, engine, videos),
                                per_family=cfg.data.family_probe, seed=cfg.run.seed)
        model.train()
        if ctx.is_main:
            path.write_text(json.dumps(result, indent=2) + "\n")
    for fam, s in result["families"].items():
        info(f"family probe: {fam:<10} {s['correct']:>3}/{s['n']:<3} right (chance {s['chance']:.2f}, "
             f"p {s['p_value']:.3f}) {'kept' if s['kept'] else 'dropped'}")
    if result["fallback"]:
        info("family probe: no family is answered above chance; training on all of them")
    kept = select_families(rows, result["kept"], cfg.data.train_file)
    info(f"family probe: {len(kept)} of {len(rows)} prompts, families {result['kept']}")
    return kept


def _group_embeds(model, feats, G):
    """Video embeddings of the P prompts repeated for their G completions; None for text-only rows."""
    return None if feats is None else model.connector(feats).repeat_interleave(G, 0)


def greedy_accuracy(parts: dict, G: int, greedy: int) -> dict:
    """With greedy rows in the groups (rollout.greedy_generations): the accuracy of those rows, the
    answer the policy would give, logged beside the samples' accuracy."""
    acc = parts.get("accuracy")
    if not greedy or not acc:
        return {}
    rows = [a for i, a in enumerate(acc) if i % G < greedy]
    return {"greedy_accuracy": sum(rows) / len(rows)}


def grpo_update(model, ref_model, batch, adv, mask, cfg: TrainConfig, optimizer, scheduler, ctx, timer):
    """rl.num_iterations optimizer steps on one batch of rollouts; returns the last step's metrics.

    batch = (feats [P, N', C] or None for text-only prompts, prompt ids, prompt mask, completion ids).
    """
    feats, p_ids, p_mask, c_ids = batch
    G = cfg.rollout.num_generations
    ref_logp = old_logp = None
    if cfg.rl.beta > 0:
        with timer("reference"), torch.no_grad():
            ref_embeds = _group_embeds(ref_model, feats, G)
            ref_logp, _ = completion_logprobs(ref_model, p_ids, p_mask, ref_embeds, c_ids, mask, group_size=G)
    if cfg.rl.num_iterations > 1:
        with torch.no_grad():
            old_embeds = _group_embeds(model, feats, G)
            old_logp, _ = completion_logprobs(model, p_ids, p_mask, old_embeds, c_ids, mask, group_size=G)
    metrics = {}
    for _ in range(cfg.rl.num_iterations):
        with timer("policy"):
            embeds = _group_embeds(model, feats, G)  # [P*G, N, D], grad to connector
            logp, entropy = completion_logprobs(model, p_ids, p_mask, embeds, c_ids, mask, with_entropy=True,
                                                group_size=G)  # each prompt once, its KV cache shared
            loss, metrics = policy_loss(
                logp, adv, mask, old_logp=old_logp, ref_logp=ref_logp, beta=cfg.rl.beta,
                kl_estimator=cfg.rl.kl_estimator, kl_clamp=cfg.rl.kl_clamp, eps_low=cfg.rl.eps_low,
                eps_high=cfg.rl.eps_high, aggregation=cfg.rl.loss_aggregation,
                max_completion_length=cfg.rollout.max_new_tokens)
            metrics["entropy"] = float(entropy)
            if not all_ranks(bool(torch.isfinite(loss)), ctx.dist):  # skip together or not at all
                metrics["skipped_updates"] = 1
                zero_grad(model, optimizer)
                scheduler.step()
                continue
            backward(loss, model, ctx.dist)  # deepspeed: the engine's backward
            # ddp: all-reduce first; every strategy: clip by the global norm, step unless it is
            # not finite, zero the gradients (deepspeed: engine.step())
            metrics["grad_norm"] = clip_and_step(model, optimizer, cfg.optim.max_grad_norm, ctx.dist)
            if not math.isfinite(metrics["grad_norm"]):
                metrics["skipped_updates"] = 1
            scheduler.step()
    return metrics


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    preflight(cfg)
    ctx = setup_run(cfg)
    banner(f"grpo: {cfg.run.name}")
    model, processor = load_or_create(cfg, ctx)
    set_trainable(model, cfg.model.trainable)
    ref_model = None
    if cfg.rl.beta > 0:  # frozen copy of the starting policy; none at all when beta = 0
        # taken before sharding: under fsdp it stays whole on every rank (no gradients or optimizer
        # states to split, and its pass needs no all-gathers); only the policy is sharded
        ref_model = copy.deepcopy(model).eval()
        ref_model.requires_grad_(False)
    model = shard_model(model, ctx.dist)  # dist.strategy=fsdp: FSDP2 full shard; ddp, deepspeed: unchanged
    rows, bad_rows = load_grpo_jsonl(cfg.data.train_file, cfg.data.video_root,
                                     allow_outside_root=cfg.data.allow_outside_root)
    for err in bad_rows:
        info(f"skipped row: {err}")
    if cfg.data.families:
        rows = select_families(rows, cfg.data.families, cfg.data.train_file)
        info(f"data.families {cfg.data.families}: {len(rows)} prompts")
    if cfg.data.limit:
        rows = rows[: cfg.data.limit]
    videos = VideoInputs(model, processor, cache=cfg.data.cache_features)
    engine = RolloutEngine(model, processor)
    if cfg.data.family_probe:  # before a checkpoint is restored: the probe asks the starting model
        rows = choose_families(cfg, rows, model, processor, engine, videos, ctx,
                               resuming=resume and ctx.ckpt.latest() is not None)
    tracker = BadSampleTracker(cfg.data.max_bad_fraction, initial_bad=len(bad_rows), initial_good=len(rows),
                               source=cfg.data.train_file)
    tracker.check()
    G = cfg.rollout.num_generations
    sampling = SamplingParams(num_generations=G, max_new_tokens=cfg.rollout.max_new_tokens,
                              temperature=cfg.rollout.temperature, top_k=cfg.rollout.top_k,
                              top_p=cfg.rollout.top_p, token_budget=cfg.rollout.token_budget,
                              greedy_rows=cfg.rollout.greedy_generations)
    steps = total_steps(cfg, len(rows), ctx.dist.world_size)
    optimizer = build_optimizer(model, cfg)
    # dist.strategy=deepspeed: the policy and this optimizer under a ZeRO-3 engine; otherwise nothing
    init_deepspeed(model, optimizer, ctx.dist, micro_batch=cfg.optim.batch_size, max_grad_norm=cfg.optim.max_grad_norm)
    scheduler = build_scheduler(optimizer, cfg, steps * cfg.rl.num_iterations)
    order = DataOrder(len(rows), cfg.run.seed, ctx.dist.rank, ctx.dist.world_size)
    start = 0
    if resume and (ckpt := ctx.ckpt.latest()) is not None:
        start = restore_training(ckpt, model, optimizer, scheduler, order, tracker, ctx)
        info(f"resumed from {ckpt} at step {start}")
    ctx.logger.truncate_after(start)
    rollout_log = JsonlWriter(ctx.out_dir / "rollouts.jsonl", enabled=ctx.is_main and cfg.run.rollout_log_every > 0)
    rollout_log.truncate_after(start)  # a resumed run redoes the steps after its checkpoint
    info(f"{len(rows)} prompts, {steps} steps x {cfg.optim.batch_size} prompts x {G} completions"
         f" x {ctx.dist.world_size} ranks; beta={cfg.rl.beta}, noise={cfg.rl.noise_std}")

    timer = Timer()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="grpo",
               disable=not (cfg.run.progress and ctx.is_main), dynamic_ncols=True)
    for step in bar:
        t0 = time.perf_counter()
        # 1-2. prompts and their videos, encoded once by the frozen tower
        with timer("encode"):
            rows_b, feats = next_prompts(rows, order, videos, tracker, cfg.optim.batch_size)
        prompt_ids = [processor.encode_prompt(GRPO_QUESTION_TEMPLATE.format(Question=r.problem)) for r in rows_b]
        # 3. rollout: one prefill per prompt, KV cache expanded xG, batched decode
        model.eval()
        with timer("rollout"), torch.no_grad(), gathered(model):  # fsdp, deepspeed: full weights while decoding
            roll = engine.generate(prompt_ids, model.connector(feats), sampling, ctx.generator)
        model.train()
        # 4-5. rewards and group advantages (+ noise so equal-reward groups still give a signal)
        parts = compute_rewards(cfg, roll.texts, rows_b, G)
        rewards = torch.tensor(parts["total"], dtype=torch.float32)
        adv = group_advantages(rewards, G, scale=cfg.rl.scale_rewards, eps=cfg.rl.adv_eps,
                               noise_std=cfg.rl.noise_std, generator=ctx.generator)
        zero_std = zero_std_groups(rewards, G)
        mask = roll.completion_mask
        if cfg.rl.mask_truncated:
            mask = mask_truncated(mask, roll.truncated)
        keep = torch.arange(len(rows_b))
        if cfg.rl.zero_std_groups == "filter":  # DAPO dynamic sampling: drop groups without signal
            keep = (~zero_std).nonzero().squeeze(-1)
        # 6. loss and update on the kept groups
        upd = {}
        if all_ranks(len(keep) > 0 and bool(mask.sum() > 0), ctx.dist):
            rows_idx = (keep[:, None] * G + torch.arange(G)).reshape(-1)
            batch_p = processor.collate([{"input_ids": prompt_ids[i]} for i in keep.tolist()], padding_side="left")
            dev = ctx.device
            batch = (feats[keep], batch_p["input_ids"].repeat_interleave(G, 0).to(dev),
                     batch_p["attention_mask"].repeat_interleave(G, 0).to(dev), roll.completion_ids[rows_idx].to(dev))
            upd = grpo_update(model, ref_model, batch, adv[rows_idx].to(dev), mask[rows_idx].to(dev),
                              cfg, optimizer, scheduler, ctx, timer)
        else:
            for _ in range(cfg.rl.num_iterations):
                scheduler.step()
            upd["skipped_update"] = 1
        # 7. log
        times = timer.pop()
        lengths = roll.lengths.float()
        metrics = {
            "reward": rewards.mean().item(),
            "reward_std": rewards.view(-1, G).std(1).mean().item(),
            **{f"reward/{k}": sum(v) / len(v) for k, v in parts.items() if k != "total"},
            "accuracy": sum(parts.get("accuracy", [0.0])) / max(1, len(parts.get("accuracy", [0.0]))),
            **greedy_accuracy(parts, G, cfg.rollout.greedy_generations),
            "format_rate": sum(f > 0 for f in parts.get("format", [])) / max(1, len(parts.get("format", [1]))),
            "completion_length": lengths.mean().item(),
            "truncated_frac": roll.truncated.float().mean().item(),
            "zero_std_frac": zero_std.float().mean().item(),
            "lr": scheduler.get_last_lr()[0],
            "tokens_per_s": roll.stats["new_tokens"] / max(times.get("rollout", 1e-9), 1e-9),
            "bad_samples": tracker.num_bad,
            **{f"time/{k}": v for k, v in times.items()},
            "time/step": time.perf_counter() - t0,
            **upd,
        }
        metrics = reduce_metrics(metrics, ctx.dist)
        if (step + 1) % cfg.run.log_every == 0 or step + 1 == steps:
            ctx.logger.log(step + 1, metrics)
        bar.set_postfix(reward=f"{metrics['reward']:.2f}", acc=f"{metrics['accuracy']:.2f}",
                        len=f"{metrics['completion_length']:.0f}")
        if cfg.run.rollout_log_every and (step + 1) % cfg.run.rollout_log_every == 0:
            for i, r in enumerate(rows_b):
                sl = slice(i * G, (i + 1) * G)
                rollout_log.write({"step": step + 1, "prompt_id": r.columns.get("id", r.index),
                                   "solution": r.solution, "completions": roll.texts[sl],
                                   "rewards": parts["total"][sl],
                                   "accuracy": parts.get("accuracy", [None] * len(roll.texts))[sl]})
        if cfg.run.save_every and (step + 1) % cfg.run.save_every == 0 and step + 1 < steps:
            save_checkpoint(ctx, step + 1, model, processor, optimizer, scheduler, order, tracker)
    bar.close()
    return finish_stage(ctx, cfg, model, processor, videos)
