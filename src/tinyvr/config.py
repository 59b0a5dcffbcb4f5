"""Typed run configs: dataclasses, YAML files, dotted overrides, loud errors.

A YAML file maps one-to-one onto `TrainConfig`. A file may start from another with
`base: relative/path.yaml` (deep-merged, the child wins). Overrides on the command line name an
existing field with a dotted path (`rl.beta=0.04`); values are parsed as YAML scalars. Unknown keys,
wrong types and out-of-range values raise `ConfigError` naming the field and what is allowed, before
any training starts.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tinyvr.errors import ConfigError

Stage = Literal["pretrain", "sft", "coldstart", "grpo"]
Part = Literal["vision_tower", "connector", "language_model"]


def _range(lo=None, hi=None, lo_open=False):
    return {"range": (lo, hi, lo_open)}


@dataclass
class RunConfig:
    name: str = "run"
    output_dir: str = "runs/run"  # everything the run writes goes under here
    seed: int = 42  # seeds python, numpy, torch and the data order
    device: str = "auto"  # auto: cuda when available, else cpu
    threads: int = field(default=0, metadata=_range(0))  # torch threads on CPU; 0 = all cores
    log_every: int = field(default=1, metadata=_range(1))
    save_every: int = field(default=0, metadata=_range(0))  # steps between checkpoints; 0 = end only
    keep_checkpoints: int = field(default=2, metadata=_range(1))
    rollout_log_every: int = field(default=1, metadata=_range(0))  # GRPO samples to rollouts.jsonl
    tensorboard: bool = True
    progress: bool = True


@dataclass
class ModelConfig:
    preset: str = "tiny"  # used when init_from is empty: a fresh model from this preset
    init_from: str = ""  # model folder of the previous stage (HF-style or reference layout)
    tokenizer: str = ""  # tokenizer folder; empty = the model folder's own / the embedded one
    trainable: list[Part] = field(default_factory=lambda: ["connector", "language_model"])
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: fp32 CPU, bf16 CUDA
    # auto: flash-attention 2 on CUDA when installed, else SDPA (tinyvr.utils.device.pick_attention)
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "sdpa"
    gradient_checkpointing: bool = False
    num_frames: int = field(default=0, metadata=_range(0))  # 0 = the model config's value
    overrides: dict = field(default_factory=dict)  # preset field overrides, e.g. {text_config: {...}}


@dataclass
class DataConfig:
    train_file: str = ""  # json (LLaVA conversations) or jsonl (GRPO rows)
    video_root: str = ""  # video paths in the file are relative to this folder
    eval_file: str = ""  # held-out jsonl evaluated at the end (GRPO format)
    eval_limit: int = field(default=64, metadata=_range(0))  # items of the end-of-stage check
    max_length: int = field(default=3072, metadata=_range(16))  # spliced sequence cap
    max_bad_fraction: float = field(default=0.05, metadata=_range(0.0, 1.0))
    allow_outside_root: bool = False  # dataset paths may not escape video_root unless allowed
    cache_features: bool = True  # frozen tower: compute its features once per video
    limit: int = field(default=0, metadata=_range(0))  # use only the first N rows; 0 = all
    # GRPO: only rows whose `family` column is one of these (empty: all). Prompts the starting model
    # answers at chance teach only a letter preference (docs/tiny-study.md, item 30)
    families: list[str] = field(default_factory=list)
    # GRPO: before training, answer this many prompts of every family greedily with the starting model
    # and train only on the families it answers above chance (binomial test, p < 0.05; all of them if
    # none is). 0 = off. The choice is written to family_probe.json and kept on resume.
    family_probe: int = field(default=0, metadata=_range(0))


@dataclass
class OptimConfig:
    lr: float = field(default=1e-5, metadata=_range(0.0, lo_open=True))
    weight_decay: float = field(default=0.0, metadata=_range(0.0))
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = field(default=1e-8, metadata=_range(0.0, lo_open=True))
    scheduler: Literal["constant", "cosine", "linear"] = "constant"
    warmup_ratio: float = field(default=0.0, metadata=_range(0.0, 1.0))
    max_grad_norm: float = field(default=1.0, metadata=_range(0.0))  # 0 = no clipping
    epochs: float = field(default=1.0, metadata=_range(0.0, lo_open=True))
    max_steps: int = field(default=0, metadata=_range(0))  # 0 = from epochs
    batch_size: int = field(default=1, metadata=_range(1))  # samples (GRPO: prompts) per step/rank
    grad_accum: int = field(default=1, metadata=_range(1))


@dataclass
class RolloutConfig:
    num_generations: int = field(default=8, metadata=_range(2))  # G completions per prompt
    temperature: float = field(default=1.0, metadata=_range(0.0))
    top_k: int = field(default=50, metadata=_range(0))  # 0 = off
    top_p: float = field(default=1.0, metadata=_range(0.0, 1.0, lo_open=True))
    max_new_tokens: int = field(default=512, metadata=_range(1))
    token_budget: int = field(default=0, metadata=_range(0))  # max prompt rows decoded at once; 0 = all
    # the first N of a prompt's G completions decode greedily: the group's advantages then say
    # whether the answer the model would give is better or worse than its samples
    greedy_generations: int = field(default=0, metadata=_range(0))


@dataclass
class RLConfig:
    reward: str = "tinyllava_r1"  # registered name or `module:function`
    extra_rewards: list[str] = field(default_factory=list)  # added to the total, TRL signature
    reward_compat: Literal["tinyvr", "reference"] = "tinyvr"  # reference = the original's numbers
    length_scale: float = field(default=1200.0, metadata=_range(0.0, lo_open=True))
    continuous_length: bool = True  # ablation: False = binary format reward
    wrong_penalty: bool = True  # r = acc + (2acc-1)fmt; False = acc + fmt (ablation)
    zero_value: float = -2.0  # a total reward of exactly 0 becomes this
    scale_rewards: Literal["group", "batch", "none"] = "group"
    adv_eps: float = field(default=1e-4, metadata=_range(0.0))
    noise_std: float = field(default=0.02, metadata=_range(0.0))  # 0 = no advantage noise
    zero_std_groups: Literal["keep", "filter"] = "keep"  # filter = DAPO dynamic sampling
    beta: float = field(default=0.01, metadata=_range(0.0))  # 0 = no reference model
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    kl_clamp: float = field(default=100.0, metadata=_range(0.0, lo_open=True))
    loss_aggregation: Literal["sequence", "token", "dr_grpo"] = "sequence"
    num_iterations: int = field(default=1, metadata=_range(1))  # updates per rollout batch (PPO ratio)
    eps_low: float = field(default=0.2, metadata=_range(0.0))
    eps_high: float = field(default=0.2, metadata=_range(0.0))
    mask_truncated: bool = False


@dataclass
class DistConfig:
    # How ranks share the model under torchrun / accelerate launch (one process: no effect).
    # ddp: every rank holds the full model, gradients are all-reduced after backward.
    # fsdp: FSDP2 full shard (ZeRO-3 equivalent): weights, gradients and optimizer states of the
    # policy are split over the ranks (tinyvr.utils.distributed.shard_model).
    # deepspeed: DeepSpeed ZeRO stage 3 over the policy (tinyvr.utils.distributed.init_deepspeed;
    # needs `pip install -e .[deepspeed]`). Tested with 2 CPU processes (gloo) only; GPU / NCCL /
    # bf16 under DeepSpeed has not been run here.
    strategy: Literal["ddp", "fsdp", "deepspeed"] = "ddp"
    # deepspeed only: a DeepSpeed json whose ZeRO (and bf16/fp16) settings are used; empty = the file
    # `accelerate launch` names in ACCELERATE_DEEPSPEED_CONFIG_FILE, else ZeRO-3 defaults. Batch
    # sizes and gradient clipping always come from optim.* (README, Multi-GPU).
    deepspeed_config: str = ""


@dataclass
class EvalConfig:
    # what `tinyvr eval --config FILE` evaluates (the end-of-stage check uses data.eval_file instead)
    task: str = ""  # mvbench, videomme, mlvu, mmvu or synthetic
    data_root: str = ""  # the benchmark's folder in its released layout
    split: str = "test"  # synthetic only: test or test_heldout
    limit: int = field(default=0, metadata=_range(0))  # first N items only; 0 = all
    output_dir: str = ""  # results go to <output_dir>/<task>-<mode>/; empty = runs/eval/<model name>
    modes: list[Literal["option", "reason"]] = field(default_factory=lambda: ["option", "reason"])
    temperature: float = field(default=0.0, metadata=_range(0.0))  # 0 = greedy
    max_new_tokens: int = field(default=64, metadata=_range(1))
    option_max_new_tokens: int = field(default=4, metadata=_range(1))
    batch_size: int = field(default=16, metadata=_range(1))
    extraction: Literal["strict", "reference"] = "strict"


@dataclass
class TrainConfig:
    stage: Stage = "sft"
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dist: DistConfig = field(default_factory=DistConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# building dataclasses from plain data, with checks


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list,):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, where: str):
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not allowed; use {_type_name(tp)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} is not {_type_name(tp)}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-5` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):  # nan passes every range check: refuse it (and inf) here
            raise ConfigError(f"{where}: {value!r} is not a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value
    return value


def _check_range(value, meta, where):
    if "range" not in meta or value is None:
        return
    lo, hi, lo_open = meta["range"]
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi)
    if bad:
        lo_s = "" if lo is None else (f"> {lo}" if lo_open else f">= {lo}")
        hi_s = "" if hi is None else f"<= {hi}"
        raise ConfigError(f"{where}: {value!r} is out of range (must be {' and '.join(s for s in (lo_s, hi_s) if s)})")


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys here: {', '.join(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(value, hints[name], path)
        _check_range(kwargs[name], fields[name].metadata, path)
    obj = cls(**kwargs)
    for name, f in fields.items():  # defaults are checked too (a base file may rely on them)
        _check_range(getattr(obj, name), f.metadata, f"{where}.{name}" if where else name)
    return obj


def _deep_merge(base: dict, child: dict) -> dict:
    out = dict(base)
    for k, v in child.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a config YAML, following `base:` links (relative to the file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: 'base' links form a cycle")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config sections")
    base = data.pop("base", None)
    if base:
        data = _deep_merge(read_yaml(path.parent / base, _seen + (path.resolve(),)), data)
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides; the path must name a field of TrainConfig."""
    data = _deep_merge({}, data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.field=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        cls, node = TrainConfig, data
        for i, part in enumerate(parts):
            names = {f.name: f for f in dataclasses.fields(cls)} if cls is not None else None
            if names is not None and part not in names:
                raise ConfigError(
                    f"override '{key}': '{part}' is not a field of {'.'.join(parts[:i]) or 'the config'}; "
                    f"valid: {', '.join(names)}"
                )
            if i == len(parts) - 1:
                try:
                    node[part] = yaml.safe_load(raw) if raw.strip() else ""
                except yaml.YAMLError:
                    node[part] = raw
            else:
                tp = typing.get_type_hints(cls)[part] if cls is not None else None
                cls = tp if tp is not None and dataclasses.is_dataclass(tp) else None
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"override '{key}': '{part}' is not a section")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, **defaults) -> TrainConfig:
    """Load `TrainConfig` from a YAML file plus dotted overrides; every value is checked."""
    data = read_yaml(path) if path else {}
    data = _deep_merge(defaults, data) if defaults else data
    if path:  # the file on its own first, so that its mistakes are reported with its name
        try:
            from_dict(TrainConfig, data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    data = apply_overrides(data, overrides or [])
    cfg = from_dict(TrainConfig, data)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks that a single field's type cannot express."""
    if cfg.rl.num_iterations > 1 and cfg.rl.eps_low <= 0 and cfg.rl.eps_high <= 0:
        raise ConfigError("rl.num_iterations > 1 needs a clipping range (rl.eps_low / rl.eps_high > 0)")
    if len(cfg.optim.betas) != 2 or not all(0 <= b < 1 for b in cfg.optim.betas):
        raise ConfigError(f"optim.betas: {cfg.optim.betas!r} must be two numbers in [0, 1)")
    if cfg.stage != "grpo" and not cfg.model.trainable:
        raise ConfigError("model.trainable: at least one part must be trained")
    if cfg.rollout.greedy_generations >= cfg.rollout.num_generations:
        raise ConfigError(f"rollout.greedy_generations: {cfg.rollout.greedy_generations} must be below "
                          f"rollout.num_generations ({cfg.rollout.num_generations}): a group needs samples")
    if len(set(cfg.model.trainable)) != len(cfg.model.trainable):
        raise ConfigError(f"model.trainable: {cfg.model.trainable!r} lists a part twice")
    if cfg.eval.task:
        from tinyvr.eval.tasks import TASKS  # no torch: cheap

        if cfg.eval.task not in TASKS:
            raise ConfigError(f"eval.task: unknown task {cfg.eval.task!r}; use one of {', '.join(TASKS)}")
    for where, name in [("rl.reward", cfg.rl.reward)] + [
            (f"rl.extra_rewards[{i}]", n) for i, n in enumerate(cfg.rl.extra_rewards)]:
        _check_reward_name(where, name)


def _check_reward_name(where: str, name: str) -> None:
    """A registered reward or a `module:function` path, checked without importing user code."""
    from tinyvr.rl.rewards import REWARD_FUNCTIONS  # no torch: cheap

    if name in REWARD_FUNCTIONS:
        return
    module, sep, attr = name.partition(":")
    dotted = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
    if not sep or not re.fullmatch(dotted, module) or not re.fullmatch(dotted, attr):
        raise ConfigError(f"{where}: unknown reward {name!r}; use one of "
                          f"{', '.join(sorted(REWARD_FUNCTIONS))} or an import path 'module:function'")


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


__all__ = [
    "TrainConfig", "RunConfig", "ModelConfig", "DataConfig", "OptimConfig", "RolloutConfig",
    "RLConfig", "EvalConfig", "DistConfig", "load_config", "save_config", "from_dict", "apply_overrides",
    "read_yaml", "validate",
]
