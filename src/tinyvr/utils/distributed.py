"""torch.distributed in one place. A single process is just world size 1.

Launch with `torchrun --nproc_per_node N -m tinyvr.cli train ...`. `dist.strategy` picks how the
ranks share the model:

ddp (default)  Every rank holds the full model. Gradients are averaged explicitly after backward
               (`average_gradients`), which is what DDP does, without wrapping the model:
               generation and the reference pass use the plain module.
fsdp           PyTorch FSDP2 (`fully_shard`), full shard: the ZeRO-3 equivalent. `shard_model`
               makes one FSDP unit per Qwen2 decoder layer (and per SigLIP encoder layer when the
               tower trains), one for the connector, and puts the rest (embeddings / tied LM head,
               final norm) at the root; a frozen vision tower stays replicated. Parameters,
               gradients and AdamW states of the policy are split over the ranks; gradients are
               averaged by FSDP's reduce-scatter in backward (`average_gradients` does nothing
               then), and `clip_grad_norm_` works on the sharded (DTensor) gradients. Generation
               runs inside `gathered(model)` (full weights while decoding); checkpoints gather the
               full weights and optimizer state (`full_state_dict`, `full_optimizer_state_dict`),
               so they are the same files as a ddp or single-process run writes, and resume in
               either direction. Weights stay in their loaded dtype (fp32 on CPU); on CUDA, fp32
               weights compute in bf16 with fp32 gradient reduction (FSDP mixed precision).

`accelerate launch --config_file configs/accelerate/fsdp.yaml` sets ACCELERATE_USE_FSDP=true,
which selects fsdp as well (`resolve_strategy`); tinyvr applies its own sharding and reads no
other setting of that file. DeepSpeed is not used: configs/accelerate/deepspeed_zero3.yaml is not
wired, fsdp is the supported ZeRO-3-style path. Tested with 2 CPU processes (gloo); the GPU (NCCL,
bf16) path has not been run here. On CUDA the process group is `cpu:gloo,cuda:nccl` (`pick_backend`):
CUDA tensors go through NCCL, the small CPU-side collectives (metrics, skip decisions, per-rank
checkpoint states, barriers) through gloo.
"""

from __future__ import annotations

import itertools
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tinyvr.utils.logging import info

# FSDP units besides the connector: the layer classes of configs/accelerate/fsdp.yaml's auto-wrap
WRAP_CLASSES = ("Qwen2DecoderLayer", "SiglipEncoderLayer")


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    strategy: str = "ddp"  # ddp or fsdp (dist.strategy, see the module docstring)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def sharded(self) -> bool:
        return self.enabled and self.strategy == "fsdp"


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def resolve_strategy(configured: str = "ddp") -> str:
    """`dist.strategy`, or fsdp when `accelerate launch` was given an FSDP config file."""
    if configured == "ddp" and _env_true("ACCELERATE_USE_FSDP"):
        info("ACCELERATE_USE_FSDP is set (accelerate launch with an FSDP config): using dist.strategy=fsdp; "
             "tinyvr shards with its own FSDP2 set-up and reads no other setting of the launch file")
        return "fsdp"
    if _env_true("ACCELERATE_USE_DEEPSPEED"):
        info(f"ACCELERATE_USE_DEEPSPEED is set, but tinyvr does not use DeepSpeed: training runs with "
             f"dist.strategy={configured}; dist.strategy=fsdp is the ZeRO-3-style sharded path")
    return configured


def pick_backend() -> str:
    """The process-group backend. On CUDA, NCCL alone would reject the CPU tensors that
    `reduce_metrics`, `all_ranks` and `gather_to_main` exchange (and its object collectives and
    barriers need a current device): a device-mapped group sends each tensor to the backend of its
    device, gloo for CPU and NCCL for CUDA (gradients, FSDP's all-gathers and reduce-scatters)."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def init_distributed(strategy: str = "ddp") -> DistEnv:
    world = int(os.environ.get("WORLD_SIZE", 1))
    strategy = resolve_strategy(strategy)
    if world <= 1:
        if strategy == "fsdp":
            info("dist.strategy=fsdp in a single process: nothing to shard, the model stays whole")
        return DistEnv(strategy=strategy)
    if not dist.is_initialized():
        dist.init_process_group(backend=pick_backend())
    return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), strategy)


def average_gradients(model: torch.nn.Module, env: DistEnv) -> None:
    """DDP: mean of the gradients over ranks. Under FSDP the reduce-scatter in backward did it."""
    if not env.enabled or is_sharded(model):
        return
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= env.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset: offset + n].view_as(g))
        offset += n


def _for_collective(t: torch.Tensor) -> torch.Tensor:
    """A CPU tensor as the group takes it: as is (gloo, or `cpu:gloo,cuda:nccl` from
    `init_distributed`), on the current GPU for a plain NCCL group that a launcher created."""
    return t.cuda() if dist.get_backend() == "nccl" else t


def all_ranks(flag: bool, env: DistEnv) -> bool:
    """True when `flag` is true on every rank. Decisions that skip a forward, a backward or an
    optimizer step must agree: a rank that skips alone leaves the others waiting in a collective."""
    if not env.enabled:
        return bool(flag)
    t = _for_collective(torch.tensor([1 if flag else 0], dtype=torch.int32))
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def reduce_metrics(metrics: dict, env: DistEnv) -> dict:
    """Mean of numeric metrics over ranks (non-numeric values are kept from this rank)."""
    if not env.enabled:
        return metrics
    keys = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    if not keys:
        return metrics
    t = _for_collective(torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= env.world_size
    out = dict(metrics)
    out.update({k: v.item() for k, v in zip(keys, t)})
    return out


def gather_to_main(obj, env: DistEnv) -> list | None:
    """Every rank's `obj` (picklable) as a list indexed by rank on rank 0, None elsewhere; [obj]
    in a single process. Every rank must call it."""
    if not env.enabled:
        return [obj]
    out = [None] * env.world_size if env.rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def cleanup(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# FSDP (dist.strategy=fsdp)


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard_model(model: torch.nn.Module, env: DistEnv) -> torch.nn.Module:
    """FSDP2 full shard of the policy when `env.sharded`; the model unchanged otherwise.

    Call after `set_trainable` and before building the optimizer (the optimizer must see the
    sharded parameters). Rank 0's weights and buffers are broadcast first, so every rank shards
    the same model whatever its loader did (FSDP's sync_module_states).
    """
    if not env.sharded:
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    with torch.no_grad():
        for t in itertools.chain(model.parameters(), model.buffers()):
            dist.broadcast(t.data, src=0)
    mesh = init_device_mesh(device.type, (env.world_size,))
    mp = MixedPrecisionPolicy()
    if device.type == "cuda" and all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad):
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    tower_trains = any(p.requires_grad for p in model.vision_tower.parameters())
    parts = [model.language_model] + ([model.vision_tower] if tower_trains else [])
    for part in parts:
        for m in part.modules():
            if type(m).__name__ in WRAP_CLASSES:
                fully_shard(m, mesh=mesh, mp_policy=mp)
    # the connector is called on its own (rollout, policy pass): it needs its own unit
    fully_shard(model.connector, mesh=mesh, mp_policy=mp)
    # A frozen tower stays whole on every rank: it has no gradients or optimizer states to split,
    # and VideoInputs calls it outside the model's forward.
    ignored = None if tower_trains else set(model.vision_tower.parameters())
    fully_shard(model, mesh=mesh, mp_policy=mp, ignored_params=ignored)
    # FSDP2 picks its root at the first forward; the connector is called before the model's own
    # forward, which would make it a root of its own. Fix the root now.
    model._get_fsdp_state()._lazy_init()
    n = sum(p.numel() for p in model.parameters())
    info(f"FSDP full shard over {env.world_size} ranks: {n / 1e6:.1f}M parameters"
         f"{', bf16 compute' if mp.param_dtype is not None else ''}")
    return model


@contextmanager
def gathered(model):
    """Full weights on every rank while inside (FSDP; nothing to do for a whole model).

    For generation, which calls the model's parts outside its forward (connector, embeddings, the
    LLM step by step): every unit is all-gathered once and kept until the end of the block,
    instead of once per layer and decode step. Costs the memory of the full weights meanwhile,
    as ZeRO-3 generation does.
    """
    if not is_sharded(model):
        yield model
        return
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    inner = [m for m in units if m is not model]  # the root keeps its own setting (no reshard)
    for m in inner:
        m.set_reshard_after_forward(False, recurse=False)
    try:
        for m in units:
            m.unshard()
        yield model
    finally:
        for m in units:
            m.reshard()
        for m in inner:
            m.set_reshard_after_forward(True, recurse=False)


def full_state_dict(model) -> dict | None:
    """The full (unsharded) weights on CPU, on rank 0 ({} elsewhere); None for a whole model.

    Under FSDP every rank must call it (all-gather)."""
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    # tied weights (LM head = embeddings) come back as separate copies: make them one tensor again,
    # as in a whole model's state dict, so that save_pretrained writes it once
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    for first, *aliases in names.values():
        for alias in aliases:
            if first in sd and alias in sd:
                sd[alias] = sd[first]
    return sd


def load_full_state_dict(model, state: dict):
    """Load full weights into a sharded model (each rank keeps its shard). Returns the missing and
    unexpected keys like `load_state_dict(strict=False)`."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    return set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))


def _sharded_params(optimizer) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for g in optimizer.param_groups for p in g["params"])


def full_optimizer_state_dict(optimizer) -> dict:
    """`optimizer.state_dict()` with every sharded state tensor gathered to a full CPU tensor:
    the same layout (parameter indices) as a single-process optimizer writes. Under FSDP every
    rank must call it (all-gather)."""
    sd = optimizer.state_dict()
    if not _sharded_params(optimizer):
        return sd
    from torch.distributed.tensor import DTensor

    state = {}
    for idx in sorted(sd["state"]):  # the same order on every rank: the gathers pair up
        state[idx] = {k: v.full_tensor().cpu() if isinstance(v, DTensor) else v
                      for k, v in sd["state"][idx].items()}
    return {"state": state, "param_groups": sd["param_groups"]}


def load_optimizer_state_dict(optimizer, sd: dict) -> None:
    """`optimizer.load_state_dict` for a full state dict (a checkpoint of any strategy); with
    sharded parameters each rank keeps the slice of every state tensor that matches its shard."""
    if not _sharded_params(optimizer):
        optimizer.load_state_dict(sd)
        return
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = [p for g in optimizer.param_groups for p in g["params"]]
    state = {}
    for idx, st in sd["state"].items():
        p = params[int(idx)]
        state[idx] = {
            k: distribute_tensor(v.to(p.device_mesh.device_type), p.device_mesh, p.placements, src_data_rank=None)
            if isinstance(p, DTensor) and torch.is_tensor(v) and v.shape == p.shape else v
            for k, v in st.items()}
    optimizer.load_state_dict({"state": state, "param_groups": sd["param_groups"]})
