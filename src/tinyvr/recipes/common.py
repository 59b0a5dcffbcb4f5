"""What every recipe needs before its loop: run folder, seeds, device, model, optimizer.

Kept small on purpose: a recipe file should still read top to bottom; this module only removes
set-up lines that would otherwise be written four times.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from tinyvr.config import TrainConfig, save_config
from tinyvr.errors import CheckpointError, ConfigError
from tinyvr.utils.checkpoint import CheckpointManager, claim_run_folder, release_run_folder
from tinyvr.utils.device import pick_attention, pick_device, pick_dtype, set_threads
from tinyvr.utils.distributed import DistEnv, barrier, full_state_dict, init_distributed
from tinyvr.utils.logging import MetricsLogger, info
from tinyvr.utils.seed import seed_everything


@dataclass
class RunContext:
    cfg: TrainConfig
    out_dir: Path
    device: torch.device
    dtype: torch.dtype
    generator: torch.Generator
    logger: MetricsLogger
    ckpt: CheckpointManager
    dist: DistEnv

    @property
    def is_main(self) -> bool:
        return self.dist.rank == 0


def setup_run(cfg: TrainConfig) -> RunContext:
    dist = init_distributed(cfg.dist.strategy, cfg.dist.deepspeed_config)
    device = pick_device(cfg.run.device)
    if dist.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    dtype = pick_dtype(cfg.model.dtype, device)
    if device.type == "cpu":
        set_threads(cfg.run.threads)
    # every rank gets the same seed: the data order is split by rank, sampling noise differs by rank
    generator = seed_everything(cfg.run.seed)
    generator.manual_seed(cfg.run.seed + 1000 * dist.rank)
    out = Path(cfg.run.output_dir)
    if dist.rank == 0:
        claim_run_folder(out)  # before anything is written: a second process into this folder stops here
        save_config(cfg, out / "config.yaml")
    logger = MetricsLogger(out, tensorboard=cfg.run.tensorboard, enabled=dist.rank == 0)
    return RunContext(cfg, out, device, dtype, generator, logger,
                      CheckpointManager(out, keep=cfg.run.keep_checkpoints), dist)


# ---------------------------------------------------------------------------------------------
# models


def is_model_folder(path: str | Path) -> bool:
    return (Path(path) / "config.json").is_file()


def check_model_folder(path: str | Path, where: str = "") -> dict:
    """A starting model that can load: its config.json (returned), and a tinyvr folder's safetensors. Git
    holds the tiny foundation's folder without its weights, so that case says how to build them."""
    path, where = Path(path), f"{where}: " if where else ""
    if not is_model_folder(path):
        raise CheckpointError(f"{where}{path} is not a model folder (no config.json)")
    cfg = json.loads((path / "config.json").read_text())
    if cfg.get("model_type") == "tinyllava":
        return cfg  # the reference layout keeps its weights in its own files (model/reference.py checks them)
    if not any(path.glob("*.safetensors")):
        hint = ""
        if path.parent.parent.name == "foundations":
            hint = ("; git does not carry the tiny foundation's weights: build them once with `make foundation` "
                    "(about 90 min), or start from a fresh tiny model with model.init_from=''")
        raise CheckpointError(f"{where}{path} has no weights (*.safetensors){hint}")
    return cfg


def load_model(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               tokenizer_dir: str | Path | None = None, attn_implementation: str | None = None):
    """Load (model, processor) from a tinyvr folder or a reference TinyLLaVA folder.

    `attn_implementation`: auto / sdpa / eager / flash_attention_2; None = the transformers default
    (auto: flash-attention 2 on CUDA when installed, else sdpa)."""
    from tinyvr.data.processor import Processor
    from tinyvr.model import TinyVideoForConditionalGeneration

    path = Path(path)
    cfg = check_model_folder(path)
    attn_implementation = pick_attention(attn_implementation, torch.device(device), dtype)
    if cfg.get("model_type") == "tinyllava":
        from tinyvr.model.reference import load_reference

        model, processor = load_reference(path, dtype=dtype, device=device, tokenizer_dir=tokenizer_dir,
                                          attn_implementation=attn_implementation)
    else:
        # safetensors only: a folder holding just a pickle (.bin) is refused, never unpickled
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model = TinyVideoForConditionalGeneration.from_pretrained(path, dtype=dtype, use_safetensors=True,
                                                                  **extra)
        processor = Processor.from_pretrained(tokenizer_dir or path)
    return model.to(device), processor


def new_model(preset: str, *, tokenizer=None, overrides: dict | None = None, seed: int = 0,
              corpus: Iterable[str] | None = None):
    """A randomly initialised model of `preset` with its processor (tiny: the embedded tokenizer)."""
    from tinyvr.data.processor import Processor
    from tinyvr.data.tokenizer import build_tiny_tokenizer, load_tokenizer
    from tinyvr.model import TinyVideoForConditionalGeneration, build_config

    if tokenizer is None:
        if preset == "tiny":
            tokenizer = build_tiny_tokenizer(corpus)
        else:
            raise ConfigError(f"model.tokenizer: preset '{preset}' needs a local tokenizer folder")
    elif isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(tokenizer)
    overrides = dict(overrides or {})
    text = dict(overrides.pop("text_config", {}) or {})
    text.setdefault("vocab_size", len(tokenizer))
    config = build_config(preset, text_config=text, **overrides)
    torch.manual_seed(seed)
    model = TinyVideoForConditionalGeneration(config)
    processor = Processor(tokenizer, image_size=config.vision_config.image_size,
                          num_frames=config.num_frames)
    return model, processor


def init_model_folder(preset: str, out: str | Path, *, seed: int = 0, corpus=None, tokenizer=None,
                      overrides: dict | None = None) -> Path:
    model, processor = new_model(preset, seed=seed, corpus=corpus, tokenizer=tokenizer, overrides=overrides)
    out = Path(out)
    save_model(model, processor, out)
    return out


def save_model(model, processor, out: str | Path, state_dict: dict | None = None) -> Path:
    """HF-style folder. `state_dict`: the full weights of a sharded model (`full_state_dict`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True, state_dict=state_dict)
    processor.save_pretrained(out)
    return out


def finish_stage(ctx: RunContext, cfg: TrainConfig, model, processor, videos) -> Path:
    """End of a training stage: `<out>/model` (rank 0 writes; under fsdp every rank takes part in
    gathering the full weights), then the quick evaluation on `data.eval_file` when set."""
    final = ctx.out_dir / "model"
    weights = full_state_dict(model)  # None for a whole model
    if ctx.is_main:
        save_model(model, processor, final, state_dict=weights)
        info(f"saved {final}")
        if cfg.data.eval_file:
            from tinyvr.recipes.evaluate import quick_eval

            if weights is not None:  # a sharded model cannot run on rank 0 alone: evaluate the saved copy
                model, videos = load_model(final, ctx.device, ctx.dtype,
                                           attn_implementation=cfg.model.attn_implementation)[0], None
            quick_eval(model, processor, cfg, ctx.out_dir / "eval", videos=videos)
    ctx.logger.close()
    if ctx.is_main:
        release_run_folder(ctx.out_dir)
    barrier(ctx.dist)
    return final


def load_or_create(cfg: TrainConfig, ctx: RunContext):
    """The stage's starting model: `model.init_from`, or a fresh `model.preset`."""
    if cfg.model.init_from:
        model, processor = load_model(cfg.model.init_from, ctx.device, ctx.dtype,
                                      tokenizer_dir=cfg.model.tokenizer or None,
                                      attn_implementation=cfg.model.attn_implementation)
    else:
        model, processor = new_model(cfg.model.preset, tokenizer=cfg.model.tokenizer or None,
                                     overrides=cfg.model.overrides, seed=cfg.run.seed)
        model = model.to(device=ctx.device, dtype=ctx.dtype)
    if cfg.model.num_frames:
        processor.num_frames = cfg.model.num_frames
    processor.max_length = cfg.data.max_length
    if cfg.model.gradient_checkpointing:  # renamed in transformers v5
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
    return model, processor


# ---------------------------------------------------------------------------------------------
# optimisation


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("model.trainable: no parameter is trainable")
    o = cfg.optim
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)


def build_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                              get_linear_schedule_with_warmup)

    warmup = math.ceil(cfg.optim.warmup_ratio * total_steps)
    if cfg.optim.scheduler == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    fn = get_cosine_schedule_with_warmup if cfg.optim.scheduler == "cosine" else get_linear_schedule_with_warmup
    return fn(optimizer, warmup, max(total_steps, 1))


def total_steps(cfg: TrainConfig, num_rows: int, world_size: int = 1) -> int:
    if cfg.optim.max_steps:
        return cfg.optim.max_steps
    per_step = cfg.optim.batch_size * cfg.optim.grad_accum * world_size
    return max(1, math.ceil(cfg.optim.epochs * num_rows / per_step))


class DataOrder:
    """Deterministic, resumable sample order: one seeded permutation per epoch.

    `cursor` counts samples handed out (good or bad), so a resumed run continues with the same
    sample it would have taken next; ranks take interleaved slices of the same order.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if n == 0:
            raise ConfigError("data.train_file: no usable rows")
        self.n, self.seed, self.rank, self.world, self.shuffle = n, seed, rank, world_size, shuffle
        self.cursor = 0
        self._epoch, self._perm = -1, None

    def _perm_for(self, epoch: int):
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1009 + epoch)
            self._perm = torch.randperm(self.n, generator=g).tolist() if self.shuffle else list(range(self.n))
            self._epoch = epoch
        return self._perm

    def next(self) -> int:
        global_pos = self.cursor * self.world + self.rank
        self.cursor += 1
        epoch, i = divmod(global_pos, self.n)
        return self._perm_for(epoch)[i]


class Timer:
    """Accumulates wall time per named phase: `with timer("rollout"): ...`."""

    def __init__(self):
        self.totals: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.totals[name] = timer.totals.get(name, 0.0) + time.perf_counter() - self.t0

        return _Span()

    def pop(self) -> dict[str, float]:
        out, self.totals = self.totals, {}
        return out


__all__ = [
    "RunContext", "setup_run", "load_model", "new_model", "init_model_folder", "save_model",
    "load_or_create", "finish_stage", "build_optimizer", "build_scheduler", "total_steps", "DataOrder",
    "Timer", "info",
]
