"""Training state in and out of checkpoints, shared by every recipe."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from tinyvr.errors import CheckpointError
from tinyvr.utils.checkpoint import CheckpointManager
from tinyvr.utils.seed import rng_state, set_rng_state


def training_state(step, optimizer, scheduler, order, tracker, ctx, **extra) -> dict:
    return {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "data_cursor": order.cursor,
        "bad": {"good": tracker.num_good, "bad": tracker.num_bad},
        "rng": rng_state(ctx.generator),
        **extra,
    }


def load_model_weights(model: torch.nn.Module, folder: str | Path) -> None:
    """Load a saved model folder's safetensors into `model` in place (tied weights allowed)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: no .safetensors weights")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")}
    if unexpected or set(missing) - tied:
        raise CheckpointError(
            f"{folder}: weights do not match the model (missing {sorted(set(missing) - tied)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})")
    if tied and hasattr(model, "tie_weights"):
        model.tie_weights()


def restore_training(ckpt: Path, model, optimizer, scheduler, order, tracker, ctx, counters=None) -> int:
    """Put model, optimizer, scheduler, data position and RNGs back as they were at `ckpt`."""
    state = CheckpointManager.load_state(ckpt)
    load_model_weights(model, Path(ckpt) / "model")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    order.cursor = state["data_cursor"]
    tracker.num_good, tracker.num_bad = state["bad"]["good"], state["bad"]["bad"]
    set_rng_state(state["rng"], ctx.generator)
    if counters is not None:
        counters.update(state.get("counters", {}))
    return int(state["step"])
