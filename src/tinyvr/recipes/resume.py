"""Training state in and out of checkpoints, shared by every recipe."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from tinyvr.errors import CheckpointError
from tinyvr.utils.checkpoint import CheckpointManager
from tinyvr.utils.distributed import (barrier, full_optimizer_state_dict, full_state_dict, gather_to_main,
                                      is_deepspeed, is_sharded, load_full_state_dict, load_optimizer_state_dict)
from tinyvr.utils.logging import info
from tinyvr.utils.seed import rng_state, seed_everything, set_rng_state


def rank_state(order, tracker, ctx) -> dict:
    """What differs between ranks: RNG states (each rank samples with its own generator), data
    position and bad-sample counts (a rank that skips a bad video moves its cursor further)."""
    return {"rank": ctx.dist.rank, "world_size": ctx.dist.world_size, "rng": rng_state(ctx.generator),
            "data_cursor": order.cursor, "bad": {"good": tracker.num_good, "bad": tracker.num_bad}}


def training_state(step, optimizer, scheduler, order, tracker, ctx, optimizer_state=None, **extra) -> dict:
    """The shared state, plus rank 0's own (as before per-rank files: older code reads it)."""
    own = rank_state(order, tracker, ctx)
    return {
        "step": step,
        "optimizer": optimizer.state_dict() if optimizer_state is None else optimizer_state,
        "scheduler": scheduler.state_dict(),
        "data_cursor": own["data_cursor"],
        "bad": own["bad"],
        "rng": own["rng"],
        "world_size": own["world_size"],
        **extra,
    }


def save_checkpoint(ctx, step, model, processor, optimizer, scheduler, order, tracker, **extra) -> None:
    """Checkpoint `step` (rank 0 writes). Every rank calls this: under FSDP or DeepSpeed the full
    weights and optimizer state are gathered first, so the files are those of an unsharded run.
    Every rank's own state (`rank_state`) is gathered to rank 0 too, which writes it as
    `rng_rank{r}.pt` inside the same atomic checkpoint folder (no rank writes into a folder that
    is not complete yet)."""
    from tinyvr.recipes.common import save_model

    weights = full_state_dict(model)  # None for a whole model
    optim = full_optimizer_state_dict(optimizer)
    ranks = gather_to_main(rank_state(order, tracker, ctx), ctx.dist)
    if ctx.is_main:
        ctx.ckpt.save(step, lambda d: save_model(model, processor, d, state_dict=weights),
                      training_state(step, optimizer, scheduler, order, tracker, ctx, optimizer_state=optim,
                                     **extra), rank_states=ranks)
    barrier(ctx.dist)


def load_model_weights(model: torch.nn.Module, folder: str | Path) -> None:
    """Load a saved model folder's safetensors into `model` in place (tied weights allowed)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: no .safetensors weights")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    partitioned = is_sharded(model) or is_deepspeed(model)
    if partitioned:  # every rank read the full file; each keeps its shard
        missing, unexpected = load_full_state_dict(model, state)
    else:
        missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")}
    if unexpected or set(missing) - tied:
        raise CheckpointError(
            f"{folder}: weights do not match the model (missing {sorted(set(missing) - tied)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})")
    if tied and hasattr(model, "tie_weights") and not partitioned:  # FSDP / ZeRO-3 share the tied tensor
        model.tie_weights()


def _own_state(ckpt: Path, state: dict, env) -> dict | None:
    """This rank's saved state, or None when the checkpoint has none for it (another world size)."""
    # a checkpoint without "world_size" predates per-rank states: taken as a single-process one
    if int(state.get("world_size", 1)) != env.world_size:
        return None
    own = CheckpointManager.load_rank_state(ckpt, env.rank)
    if own is None and env.rank == 0:  # an older single-process checkpoint: trainer_state holds it
        own = {"rng": state["rng"], "data_cursor": state["data_cursor"], "bad": state["bad"]}
    return own


def _derived_state(state: dict, env) -> dict:
    """A deterministic stand-in for a rank's state when the number of ranks changed: the samples
    the old ranks took in all (rank 0's cursor x old world size, rounded up so that none is taken
    twice) split over the new ranks, and RNGs seeded from rank 0's saved states, the step and
    this rank (distinct per rank, the same on every rerun)."""
    saved_world = int(state.get("world_size", 1))
    rng = state["rng"]
    h = hashlib.sha256(f"{state['step']}/{env.rank}/{env.world_size}".encode())
    for k in ("torch", "generator"):
        if k in rng:
            h.update(rng[k].numpy().tobytes())
    return {"data_cursor": math.ceil(state["data_cursor"] * saved_world / env.world_size), "bad": state["bad"],
            "seed": int.from_bytes(h.digest()[:8], "little") >> 1}


def restore_training(ckpt: Path, model, optimizer, scheduler, order, tracker, ctx, counters=None) -> int:
    """Put model, optimizer, scheduler, data position and RNGs back as they were at `ckpt`: each
    rank its own RNG states and data position, so a resumed multi-rank run repeats the
    uninterrupted one exactly. A checkpoint from another number of ranks resumes too, with a
    derived state per rank (`_derived_state`) and a warning: not bit-exact then."""
    state = CheckpointManager.load_state(ckpt)
    load_model_weights(model, Path(ckpt) / "model")
    load_optimizer_state_dict(optimizer, state["optimizer"])  # full state; sharded when the model is
    scheduler.load_state_dict(state["scheduler"])
    own = _own_state(ckpt, state, ctx.dist)
    if own is None:
        own = _derived_state(state, ctx.dist)
        saved_world = int(state.get("world_size", 1))
        if saved_world != ctx.dist.world_size and ctx.dist.rank == 0:
            info(f"warning: {ckpt} was written by {saved_world} process(es), this run has {ctx.dist.world_size}: "
                 f"data positions and RNG states are derived, resume is not bit-exact")
        elif saved_world == ctx.dist.world_size:
            info(f"warning: {ckpt} has no state of rank {ctx.dist.rank} (rng_rank{ctx.dist.rank}.pt): its data "
                 f"position and RNG states are derived, resume is not bit-exact")
        gen = seed_everything(own["seed"])
        if ctx.generator is not None:
            ctx.generator.set_state(gen.get_state())
    else:
        set_rng_state(own["rng"], ctx.generator)
    order.cursor = own["data_cursor"]
    tracker.num_good, tracker.num_bad = own["bad"]["good"], own["bad"]["bad"]
    if counters is not None:
        counters.update(state.get("counters", {}))
    return int(state["step"])
