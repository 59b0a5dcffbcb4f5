"""Supervised stages: pretrain (captions), SFT (option answers), cold start (reasoning samples).

One loop, three configs (configs/tiny/{pretrain,sft,coldstart}.yaml): the stages differ only in
their data and in which parts of the model train. Read top to bottom:

    set up -> model -> data -> optimizer -> [resume] -> loop(batch, loss, step, log, checkpoint)
    -> final model folder -> quick evaluation on a held-out slice
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tinyvr.config import TrainConfig
from tinyvr.data.datasets import BadSampleTracker, load_conversation_json
from tinyvr.data.feature_cache import VideoInputs
from tinyvr.errors import TinyVRError
from tinyvr.model import set_trainable
from tinyvr.recipes.common import (DataOrder, build_optimizer, build_scheduler, finish_stage, load_or_create,
                                   setup_run, total_steps)
from tinyvr.recipes.validate import preflight
from tinyvr.recipes.resume import load_model_weights, restore_training, save_checkpoint
from tinyvr.utils.distributed import (all_ranks, backward, clip_and_step, init_deepspeed, reduce_metrics,
                                      shard_model, zero_grad)
from tinyvr.utils.logging import banner, info


def next_batch(rows, order: DataOrder, processor, videos: VideoInputs, tracker: BadSampleTracker, size: int):
    """`size` good samples as model inputs; bad ones are skipped, counted and named in the log."""
    items, paths = [], []
    while len(items) < size:
        row = rows[order.next()]
        try:
            videos([row.video_path])  # decode now (cached for the batch): a bad video is skipped here
            ids, labels = processor.encode_conversation(row.conversations)
        except TinyVRError as e:
            tracker.bad(e)
            info(f"skipped sample {row.index}: {e}")
            continue
        tracker.ok()
        items.append({"input_ids": ids, "labels": labels})
        paths.append(row.video_path)
    batch = processor.collate(items, padding_side="right")
    batch.update(videos(paths))  # cached: no second decode
    return batch


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    preflight(cfg)
    ctx = setup_run(cfg)
    banner(f"{cfg.stage}: {cfg.run.name}")
    model, processor = load_or_create(cfg, ctx)
    set_trainable(model, cfg.model.trainable)
    model = shard_model(model, ctx.dist)  # dist.strategy=fsdp: FSDP2 full shard; ddp, deepspeed: unchanged
    rows, bad_rows = load_conversation_json(cfg.data.train_file, cfg.data.video_root,
                                            allow_outside_root=cfg.data.allow_outside_root)
    for err in bad_rows:
        info(f"skipped row: {err}")
    if cfg.data.limit:
        rows = rows[: cfg.data.limit]
    tracker = BadSampleTracker(cfg.data.max_bad_fraction, initial_bad=len(bad_rows), initial_good=len(rows),
                               source=cfg.data.train_file)
    tracker.check()
    videos = VideoInputs(model, processor, cache=cfg.data.cache_features)
    steps = total_steps(cfg, len(rows), ctx.dist.world_size)
    optimizer = build_optimizer(model, cfg)
    # dist.strategy=deepspeed: the policy and this optimizer under a ZeRO-3 engine; otherwise nothing
    init_deepspeed(model, optimizer, ctx.dist, micro_batch=cfg.optim.batch_size, max_grad_norm=cfg.optim.max_grad_norm)
    scheduler = build_scheduler(optimizer, cfg, steps)
    order = DataOrder(len(rows), cfg.run.seed, ctx.dist.rank, ctx.dist.world_size)
    start, counters = 0, {"skipped_updates": 0}
    if resume and (ckpt := ctx.ckpt.latest()) is not None:
        start = restore_training(ckpt, model, optimizer, scheduler, order, tracker, ctx, counters)
        info(f"resumed from {ckpt} at step {start}")
    ctx.logger.truncate_after(start)
    info(f"{len(rows)} samples, {steps} steps of {cfg.optim.batch_size}x{cfg.optim.grad_accum}"
         f"x{ctx.dist.world_size}, trainable: {', '.join(cfg.model.trainable)}")

    model.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=cfg.stage,
               disable=not (cfg.run.progress and ctx.is_main), dynamic_ncols=True)
    for step in bar:
        loss_sum, tokens, finite = 0.0, 0, True
        for _ in range(cfg.optim.grad_accum):
            batch = next_batch(rows, order, processor, videos, tracker, cfg.optim.batch_size)
            loss = model(**batch).loss / cfg.optim.grad_accum
            if not all_ranks(bool(torch.isfinite(loss)), ctx.dist):  # skip the whole update (all ranks), count it
                finite = False
                loss_sum = float("nan")
                break
            backward(loss, model, ctx.dist)  # deepspeed: the engine's backward (accumulates too)
            loss_sum += loss.item()
            tokens += int((batch["labels"] != -100).sum())
        grad_norm = float("nan")
        if finite:
            # ddp: all-reduce first; every strategy: clip by the global norm, step unless it is not
            # finite, zero the gradients (deepspeed: engine.step())
            grad_norm = clip_and_step(model, optimizer, cfg.optim.max_grad_norm, ctx.dist)
            finite = math.isfinite(grad_norm)
        else:
            zero_grad(model, optimizer)
        counters["skipped_updates"] += int(not finite)
        scheduler.step()
        metrics = reduce_metrics({"loss": loss_sum, "grad_norm": grad_norm, "lr": scheduler.get_last_lr()[0],
                                  "target_tokens": tokens, "bad_samples": tracker.num_bad,
                                  "skipped_updates": counters["skipped_updates"]}, ctx.dist)
        if (step + 1) % cfg.run.log_every == 0 or step + 1 == steps:
            ctx.logger.log(step + 1, metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}")
        if cfg.run.save_every and (step + 1) % cfg.run.save_every == 0 and step + 1 < steps:
            save_checkpoint(ctx, step + 1, model, processor, optimizer, scheduler, order, tracker,
                            counters=dict(counters))
    bar.close()
    return finish_stage(ctx, cfg, model, processor, videos)


__all__ = ["train", "next_batch", "load_model_weights"]
