"""torch.distributed in one place. A single process is just world size 1.

Launch with `torchrun --nproc_per_node N -m tinyvr.cli train ...` (a plain multi-GPU `accelerate
launch` sets the same RANK/WORLD_SIZE but is untested). Every rank holds the full model: nothing
here shards parameters, so the FSDP / DeepSpeed files in configs/accelerate/ are not used yet.
Gradients are averaged explicitly after backward (`average_gradients`), which is what DDP does,
without wrapping the model: generation and the reference pass use the plain module, and the
equality "N ranks == 1 rank over the same global batch" is easy to see and to test.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistEnv:
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return DistEnv()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def average_gradients(model: torch.nn.Module, env: DistEnv) -> None:
    if not env.enabled:
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


def reduce_metrics(metrics: dict, env: DistEnv) -> dict:
    """Mean of numeric metrics over ranks (non-numeric values are kept from this rank)."""
    if not env.enabled:
        return metrics
    keys = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    if not keys:
        return metrics
    t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= env.world_size
    out = dict(metrics)
    out.update({k: v.item() for k, v in zip(keys, t)})
    return out


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def cleanup(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()
