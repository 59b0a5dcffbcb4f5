"""Training state in and out of checkpoints, shared by every recipe."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from tinyvr.errors import CheckpointError
from tinyvr.utils.checkpoint import CheckpointManager
from tinyvr.utils.distributed import (barrier, full_optimizer_state_dict, full_state_dict, is_sharded,
                                      load_full_state_dict, load_optimizer_state_dict)
from tinyvr.utils.seed import rng_state, set_rng_state


def training_state(step, optimizer, scheduler, order, tracker, ctx, optimizer_state=None, **extra) -> dict:
    return {
        "step": step,
        "optimizer": optimizer.state_dict() if optimizer_state is None else optimizer_state,
        "scheduler": scheduler.state_dict(),
        "data_cursor": order.cursor,
        "bad": {"good": tracker.num_good, "bad": tracker.num_bad},
        "rng": rng_state(ctx.generator),
        **extra,
    }


def save_checkpoint(ctx, step, model, processor, optimizer, scheduler, order, tracker, **extra) -> None:
    """Checkpoint `step` (rank 0 writes). Every rank calls this: under FSDP the full weights and
    optimizer state are gathered first, so the files are those of an unsharded run."""
    from tinyvr.recipes.common import save_model

    weights = full_state_dict(model)  # None for a whole model
    optim = full_optimizer_state_dict(optimizer)
    if ctx.is_main:
        ctx.ckpt.save(step, lambda d: save_model(model, processor, d, state_dict=weights),
                      training_state(step, optimizer, scheduler, order, tracker, ctx, optimizer_state=optim,
                                     **extra))
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
    if is_sharded(model):  # every rank read the full file; each keeps its shard
        missing, unexpected = load_full_state_dict(model, state)
    else:
        missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")}
    if unexpected or set(missing) - tied:
        raise CheckpointError(
            f"{folder}: weights do not match the model (missing {sorted(set(missing) - tied)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})")
    if tied and hasattr(model, "tie_weights") and not is_sharded(model):  # FSDP shares the tied tensor
        model.tie_weights()


def restore_training(ckpt: Path, model, optimizer, scheduler, order, tracker, ctx, counters=None) -> int:
    """Put model, optimizer, scheduler, data position and RNGs back as they were at `ckpt`."""
    state = CheckpointManager.load_state(ckpt)
    load_model_weights(model, Path(ckpt) / "model")
    load_optimizer_state_dict(optimizer, state["optimizer"])  # full state; sharded when the model is
    scheduler.load_state_dict(state["scheduler"])
    order.cursor = state["data_cursor"]
    tracker.num_good, tracker.num_bad = state["bad"]["good"], state["bad"]["bad"]
    set_rng_state(state["rng"], ctx.generator)
    if counters is not None:
        counters.update(state.get("counters", {}))
    return int(state["step"])
