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
deepspeed      DeepSpeed ZeRO stage 3. `init_deepspeed` (after `build_optimizer`) builds an engine
               over the policy's parts (connector, LLM; the tower when it trains) with the
               recipe's AdamW as ZeRO-3's base optimizer; the model stays the plain module the
               recipes call, and ZeRO-3's hooks on every submodule gather its weights for its
               forward and backward. `backward` and `clip_and_step` run the engine's backward and
               step (gradient mean, clipping by the global norm from optim.max_grad_norm, a
               non-finite norm skips the step); the engine is found in a registry keyed by model
               and optimizer. A frozen vision tower stays a plain module on every rank. Generation
               runs inside `gathered(model)` (GatheredParameters, held through the decode steps);
               checkpoints gather full weights and the optimizer state in the single-process
               layout (parameter indices of the optimizer's original order), and a fresh engine
               loads such a checkpoint from any strategy. ZeRO settings (and DeepSpeed's
               bf16/fp16) come from dist.deepspeed_config, or the json accelerate launch names;
               batch sizes and clipping from optim.*; accumulation is tinyvr's own
               (`deepspeed_config`).

The recipes run one loop for all three: `backward(loss, model, env)` per micro-batch, then
`clip_and_step(model, optimizer, max_grad_norm, env)` (or `zero_grad` to drop an update).

`accelerate launch --config_file configs/accelerate/fsdp.yaml` sets ACCELERATE_USE_FSDP=true,
which selects fsdp (`resolve_strategy`); tinyvr applies its own sharding and reads no other
setting of that file. `--config_file configs/accelerate/deepspeed_zero3.yaml` sets
ACCELERATE_USE_DEEPSPEED=true, which selects deepspeed, and ACCELERATE_DEEPSPEED_CONFIG_FILE,
the json the engine reads when dist.deepspeed_config is empty. Tested with 2 CPU processes (gloo,
fp32) for all three; the GPU path (NCCL, bf16, DeepSpeed's GPU kernels) has not been run here.
On CPU, DeepSpeed's shared-memory all-reduce op is not built (`_init_deepspeed_comm`: gloo does
the collectives, the JIT compile would cost ~100 s). On CUDA the process group is
`cpu:gloo,cuda:nccl` (`pick_backend`): CUDA tensors go through NCCL, the small CPU-side
collectives (metrics, skip decisions, per-rank checkpoint states, barriers) through gloo.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field

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
    strategy: str = "ddp"  # ddp, fsdp or deepspeed (dist.strategy, see the module docstring)
    deepspeed_config: str = ""  # dist.deepspeed_config, or the json accelerate launch named

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def sharded(self) -> bool:
        """FSDP sharding (dist.strategy=fsdp with more than one rank)."""
        return self.enabled and self.strategy == "fsdp"

    @property
    def deepspeed(self) -> bool:
        """DeepSpeed ZeRO-3 (dist.strategy=deepspeed with more than one rank)."""
        return self.enabled and self.strategy == "deepspeed"


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def resolve_strategy(configured: str = "ddp") -> str:
    """`dist.strategy`, or the strategy of the config file `accelerate launch` was given: fsdp for
    an FSDP file (ACCELERATE_USE_FSDP), deepspeed for a DeepSpeed one (ACCELERATE_USE_DEEPSPEED).
    An explicit fsdp or deepspeed in the run config wins."""
    if configured != "ddp":
        return configured
    if _env_true("ACCELERATE_USE_FSDP"):
        info("ACCELERATE_USE_FSDP is set (accelerate launch with an FSDP config): using dist.strategy=fsdp; "
             "tinyvr shards with its own FSDP2 set-up and reads no other setting of the launch file")
        return "fsdp"
    if _env_true("ACCELERATE_USE_DEEPSPEED"):
        info("ACCELERATE_USE_DEEPSPEED is set (accelerate launch with a DeepSpeed config): using "
             "dist.strategy=deepspeed, ZeRO settings from dist.deepspeed_config if set, else from "
             f"ACCELERATE_DEEPSPEED_CONFIG_FILE ({os.environ.get('ACCELERATE_DEEPSPEED_CONFIG_FILE') or 'not set: ZeRO-3 defaults'})")
        return "deepspeed"
    return configured


def pick_backend() -> str:
    """The process-group backend. On CUDA, NCCL alone would reject the CPU tensors that
    `reduce_metrics`, `all_ranks` and `gather_to_main` exchange (and its object collectives and
    barriers need a current device): a device-mapped group sends each tensor to the backend of its
    device, gloo for CPU and NCCL for CUDA (gradients, FSDP's all-gathers and reduce-scatters)."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def init_distributed(strategy: str = "ddp", deepspeed_config: str = "") -> DistEnv:
    world = int(os.environ.get("WORLD_SIZE", 1))
    strategy = resolve_strategy(strategy)
    if strategy == "deepspeed" and not deepspeed_config:
        deepspeed_config = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "")
    if world <= 1:
        if strategy in ("fsdp", "deepspeed"):
            info(f"dist.strategy={strategy} in a single process: nothing to shard, the model stays whole")
        return DistEnv(strategy=strategy, deepspeed_config=deepspeed_config)
    if not dist.is_initialized():
        dist.init_process_group(backend=pick_backend())
    return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), strategy,
                   deepspeed_config)


def average_gradients(model: torch.nn.Module, env: DistEnv) -> None:
    """DDP: mean of the gradients over ranks. Under FSDP the reduce-scatter in backward did it,
    under DeepSpeed `backward` did."""
    if not env.enabled or is_sharded(model) or is_deepspeed(model):
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


def broadcast_from_rank0(model: torch.nn.Module) -> None:
    """Rank 0's weights and buffers on every rank, whatever each rank's loader did (FSDP's
    sync_module_states); before sharding or partitioning."""
    with torch.no_grad():
        for t in itertools.chain(model.parameters(), model.buffers()):
            dist.broadcast(t.data, src=0)


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
    broadcast_from_rank0(model)
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
    """Full weights on every rank while inside (FSDP, DeepSpeed; nothing to do for a whole model).

    For generation, which calls the model's parts outside its forward (connector, embeddings, the
    LLM step by step): every unit is all-gathered once and kept until the end of the block,
    instead of once per layer and decode step. Costs the memory of the full weights meanwhile,
    as ZeRO-3 generation does. Under DeepSpeed: `deepspeed.zero.GatheredParameters` over the
    partitioned parameters (read-only: changes inside are discarded).
    """
    if is_deepspeed(model):
        import deepspeed

        params = _ds_params(model)
        with deepspeed.zero.GatheredParameters(params):
            # ZeRO-3's post-forward hook of each submodule re-partitions its weights unless some
            # user still holds them (`ds_active_sub_modules`): hold them all until the block ends,
            # so the decode steps inside find them gathered (no all-gather per layer and step).
            for p in params:
                p.ds_active_sub_modules.add(_HELD_BY_GATHERED)
            try:
                yield model
            finally:
                for p in params:
                    p.ds_active_sub_modules.discard(_HELD_BY_GATHERED)
        return
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

    Under FSDP or DeepSpeed every rank must call it (all-gather)."""
    if is_deepspeed(model):
        return _ds_full_state_dict(model)
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
    unexpected keys like `load_state_dict(strict=False)`. Every rank must call it."""
    if is_deepspeed(model):
        return _ds_load_full_state_dict(model, state)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    return set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))


def _sharded_params(optimizer) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for g in optimizer.param_groups for p in g["params"])


def full_optimizer_state_dict(optimizer) -> dict:
    """`optimizer.state_dict()` with every sharded state tensor gathered to a full CPU tensor:
    the same layout (parameter indices) as a single-process optimizer writes. Under FSDP or
    DeepSpeed every rank must call it (all-gather)."""
    if is_deepspeed(optimizer):
        return _ds_full_optimizer_state_dict(optimizer)
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
    if is_deepspeed(optimizer):
        _ds_load_optimizer_state_dict(optimizer, sd)
        return
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


# ---------------------------------------------------------------------------------------------
# The training step, the same for every strategy


def backward(loss: torch.Tensor, model, env: DistEnv) -> None:
    """`loss.backward()`, or the DeepSpeed engine's backward (which reduces and partitions the
    gradients) when the model runs under ZeRO-3. Several calls before one `clip_and_step`
    accumulate, as with plain autograd."""
    run = _DEEPSPEED.get(model)
    if run is None:
        loss.backward()
        return
    # The recipes call the model itself, not `engine(...)`: do the one thing the engine's forward
    # does for the backward, the micro-step count that makes a second backward before the step
    # add to the gradient partitions instead of overwriting them.
    run.engine.optimizer.clear_backward_seen_flag()
    run.engine.backward(loss, scale_wrt_gas=False)  # gradient_accumulation_steps is 1: no scaling


def clip_and_step(model, optimizer, max_grad_norm: float, env: DistEnv) -> float:
    """Average the gradients over ranks (ddp), clip them to `max_grad_norm` (0 = no clipping) by
    their global norm, take the optimizer step when that norm is finite, and zero the gradients.
    Returns the norm before clipping (inf / nan: the step was skipped).

    Under DeepSpeed the engine does all of it in `engine.step()`: clipping by the config's
    `gradient_clipping` (set from optim.max_grad_norm by `init_deepspeed`), and a non-finite
    global norm makes ZeRO-3 skip the step (its overflow check), reported here as inf."""
    run = _DEEPSPEED.get(model)
    if run is not None:
        run.engine.step()
        norm = run.engine.get_global_grad_norm()
        # A parameter without a gradient in the next backward (e.g. the connector on a text-only
        # batch) would find this step's gradient still in its partition: clear them.
        buf = getattr(run.engine.optimizer, "grad_partitions_flat_buffer", None)
        if torch.is_tensor(buf):
            buf.zero_()
        return float("nan") if norm is None else float(norm)
    average_gradients(model, env)  # ddp; under fsdp the backward's reduce-scatter did it
    params = [p for p in model.parameters() if p.requires_grad]
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else math.inf))
    if math.isfinite(norm):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def zero_grad(model, optimizer) -> None:
    """Drop the gradients accumulated so far without a step (a skipped update)."""
    run = _DEEPSPEED.get(model)
    if run is not None:
        run.engine.optimizer.zero_grad()  # also restarts its accumulation (the next backward overwrites)
        return
    optimizer.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------------------------
# DeepSpeed ZeRO-3 (dist.strategy=deepspeed)


@dataclass
class _DeepSpeedRun:
    engine: object  # deepspeed.DeepSpeedEngine over the policy's partitioned parts
    # the optimizer's parameters by group, in the order it was built with: the parameter indices
    # of a checkpoint's optimizer state (ZeRO-3 replaces them by flat partitions in the groups)
    params: list = field(default_factory=list)


_HELD_BY_GATHERED = "tinyvr.gathered"  # a holder id in ZeRO-3's per-parameter set of active users

# model -> run and optimizer -> run. The engine is an nn.Module of its own: kept here rather than
# as an attribute of the model, where it would become a submodule (state dict, deepcopy, .to()).
_DEEPSPEED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def is_deepspeed(obj) -> bool:
    """True for a model or optimizer that `init_deepspeed` put under a ZeRO-3 engine."""
    try:
        return obj in _DEEPSPEED
    except TypeError:  # not weak-referenceable
        return False


def deepspeed_config(path: str = "", *, micro_batch: int = 1, world_size: int = 1,
                     max_grad_norm: float = 0.0) -> dict:
    """The DeepSpeed config of a run: the json at `path` (ZeRO settings, bf16/fp16, ...) or ZeRO-3
    defaults, with what tinyvr's own loop decides put in: stage 3, the batch size per rank,
    gradient_accumulation_steps 1 (the recipes accumulate optim.grad_accum micro-batches
    themselves and step once) and gradient_clipping = optim.max_grad_norm."""
    from tinyvr.errors import ConfigError

    ds: dict = {}
    if path:
        try:
            with open(path) as f:
                ds = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(f"dist.deepspeed_config: cannot read {path} ({e})") from None
    for key in ("optimizer", "scheduler"):
        if key in ds:
            info(f"{path}: '{key}' is ignored: tinyvr builds its own AdamW and learning-rate schedule (optim.*)")
            ds.pop(key)
    zero = dict(ds.get("zero_optimization") or {})
    if zero.get("stage", 3) != 3:
        raise ConfigError(f"{path}: zero_optimization.stage is {zero['stage']}; dist.strategy=deepspeed runs stage 3")
    zero["stage"] = 3
    ds["zero_optimization"] = zero
    ours = {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": 1,
            "train_batch_size": micro_batch * world_size, "gradient_clipping": float(max_grad_norm)}
    changed = [f"{k} {ds[k]} -> {v}" for k, v in ours.items() if k in ds and ds[k] != v]
    if changed:
        info(f"{path}: replaced by the run config (optim.batch_size, optim.max_grad_norm, {world_size} ranks; "
             f"tinyvr accumulates optim.grad_accum itself): {', '.join(changed)}")
    ds.update(ours)
    ds.setdefault("zero_allow_untested_optimizer", True)  # torch's AdamW (or a test's SGD)
    ds.setdefault("steps_per_print", 10**9)  # tinyvr logs its own metrics
    return ds


def _init_deepspeed_comm(device: torch.device) -> None:
    import deepspeed

    if device.type == "cpu":
        # On CPU, DeepSpeed's communication layer JIT-compiles a shared-memory all-reduce op with
        # g++ the first time (~100 s, cached in ~/.cache/torch_extensions). The gloo process group
        # is enough for the CPU runs (tests, small jobs): skip the build. (`import deepspeed.comm.torch
        # as m` would give torch itself: deepspeed.comm re-exports the name `torch`.)
        import importlib

        ds_torch = importlib.import_module("deepspeed.comm.torch")
        if hasattr(ds_torch, "build_shm_op"):
            ds_torch.build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")


def init_deepspeed(model: torch.nn.Module, optimizer: torch.optim.Optimizer, env: DistEnv, *,
                   micro_batch: int = 1, max_grad_norm: float = 0.0) -> None:
    """Put the policy and its optimizer under a DeepSpeed ZeRO-3 engine when `env.deepspeed`;
    nothing otherwise. Call after `build_optimizer` and before the scheduler and any checkpoint
    restore.

    `model` stays the plain module the recipes call (its parts, `model.connector`,
    `model.language_model`, are called outside its forward): ZeRO-3 hooks on every submodule
    gather each one's weights for its forward and backward. The engine covers every part except
    a frozen vision tower, which stays whole on every rank (VideoInputs runs it on each rank's own
    videos at its own time, which partitioned weights could not serve), as under fsdp. `optimizer`
    (torch's AdamW from `build_optimizer`) becomes ZeRO-3's base optimizer: its states live on
    each rank's flat fp32 partitions, its param_groups stay the same dicts (the learning-rate
    scheduler keeps working on them).
    """
    if not env.deepspeed:
        return
    import deepspeed

    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    _init_deepspeed_comm(device)
    broadcast_from_rank0(model)
    tower_trains = any(p.requires_grad for p in model.vision_tower.parameters())
    policy = torch.nn.ModuleDict({name: part for name, part in model.named_children()
                                  if name != "vision_tower" or tower_trains})
    params = [list(g["params"]) for g in optimizer.param_groups]
    config = deepspeed_config(env.deepspeed_config, micro_batch=micro_batch, world_size=env.world_size,
                              max_grad_norm=max_grad_norm)
    engine, *_ = deepspeed.initialize(model=policy, optimizer=optimizer, config=config)
    run = _DeepSpeedRun(engine, params)
    _DEEPSPEED[model] = run
    _DEEPSPEED[optimizer] = run
    n = sum(p.ds_numel for p in policy.parameters())
    info(f"DeepSpeed ZeRO-3 over {env.world_size} ranks: {n / 1e6:.1f}M parameters partitioned"
         f"{'' if tower_trains else ' (the frozen vision tower stays whole)'}"
         f"{', config ' + env.deepspeed_config if env.deepspeed_config else ''}")


def _ds_params(model) -> list:
    """The ZeRO-3 parameters of a model under DeepSpeed (the frozen tower's are plain tensors)."""
    return [p for p in model.parameters() if hasattr(p, "ds_id")]


def _ds_full_state_dict(model) -> dict:
    """Every parameter and buffer, full, on CPU on rank 0 ({} elsewhere): all ranks gather."""
    import deepspeed

    out = {}
    with deepspeed.zero.GatheredParameters(_ds_params(model)):
        if dist.get_rank() == 0:
            copies: dict[int, torch.Tensor] = {}  # tied weights stay one tensor
            for name, t in itertools.chain(model.named_parameters(remove_duplicate=False),
                                           model.named_buffers(remove_duplicate=False)):
                if id(t) not in copies:
                    copies[id(t)] = t.detach().to("cpu", copy=True)
                out[name] = copies[id(t)]
            persistent = set(model.state_dict(keep_vars=True))  # non-persistent buffers are not saved
            out = {k: v for k, v in out.items() if k in persistent}
    return out


def _ds_load_full_state_dict(model, state: dict):
    import deepspeed

    with deepspeed.zero.GatheredParameters(_ds_params(model), modifier_rank=0):
        result = model.load_state_dict(state, strict=False)  # into the full weights; rank 0's kept
    # the optimizer's fp32 master copies follow (the same tensors for fp32 weights)
    _DEEPSPEED[model].engine.optimizer.refresh_fp32_params()
    return result


def _ds_trainable(run) -> list:
    return [p for group in run.params for p in group]


def _ds_full_optimizer_state_dict(optimizer) -> dict:
    """ZeRO-3's optimizer state in the single-process layout: per trainable parameter (indices in
    the optimizer's original order) its full state tensors, gathered from the flat partitions."""
    from deepspeed.utils import safe_get_full_optimizer_state

    run = _DEEPSPEED[optimizer]
    flat_states = list(optimizer.state.values())  # one per flat fp32 partition; empty before a step
    state = {}
    if flat_states:
        template = flat_states[0]
        for idx, p in enumerate(_ds_trainable(run)):  # the same order on every rank: the gathers pair up
            st = {}
            for key, value in template.items():
                if torch.is_tensor(value) and value.dim() > 0:  # per element (exp_avg, exp_avg_sq, momentum)
                    st[key] = safe_get_full_optimizer_state(p, key).detach().to("cpu", copy=True)
                else:  # per group (AdamW's step): the same for every parameter
                    st[key] = value.detach().clone().cpu() if torch.is_tensor(value) else value
            state[idx] = st
    groups, start = [], 0
    for group, params in zip(optimizer.param_groups, run.params):
        groups.append({**{k: v for k, v in group.items() if k != "params"},
                       "params": list(range(start, start + len(params)))})
        start += len(params)
    return {"state": state, "param_groups": groups}


def _ds_load_optimizer_state_dict(optimizer, sd: dict) -> None:
    """A full (single-process layout) optimizer state into ZeRO-3's partitions: each rank copies
    its slice of every state tensor. ZeRO-3 creates the states lazily at its first step, so a
    fresh engine gets them created first (zeros, then overwritten)."""
    from deepspeed.utils import safe_set_full_optimizer_state

    run = _DEEPSPEED[optimizer]
    for group, saved in zip(optimizer.param_groups, sd["param_groups"]):
        group.update({k: v for k, v in saved.items() if k != "params"})
    if not sd["state"]:
        return
    template = next(iter(sd["state"].values()))
    zero = run.engine.optimizer
    for flat in zero.fp32_partitioned_groups_flat:
        st = optimizer.state[flat]
        for key, value in template.items():
            if torch.is_tensor(value) and value.dim() > 0:
                if key not in st:
                    st[key] = torch.zeros_like(flat)
            else:
                st[key] = value.clone() if torch.is_tensor(value) else value
    for idx, p in enumerate(_ds_trainable(run)):
        saved = sd["state"].get(idx, sd["state"].get(str(idx)))
        if saved is None:
            continue
        for key, value in saved.items():
            if torch.is_tensor(value) and value.dim() > 0:
                safe_set_full_optimizer_state(p, value.to(device=p.device, dtype=torch.float32), key)
