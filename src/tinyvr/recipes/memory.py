"""`tinyvr estimate-memory`: an analytic per-GPU memory estimate of a training config.

Nothing is allocated: parameter counts come from the model config (built on the meta device), the
rest from sizes and the recipe's settings. For a GRPO config (the published 3.6B recipe:
`configs/tinyllava_video_r1/grpo.yaml`) one GPU holds, per step:

* persistent: policy weights (bf16), AdamW m and v (fp32) and fp32 master weights of the trainable
  parts (mixed precision), the frozen reference model when beta > 0 (bf16); ZeRO partitions the
  optimizer states over the GPUs from stage 1, the gradients from stage 2, the weights (policy and
  reference, as TRL's `prepare_deepspeed` does) at stage 3;
* generation phase: the KV cache of G rows x (prompt + video + max_new_tokens) tokens, and under
  ZeRO-3 the full weights gathered for generation (as the original's `unwrap_model_for_generation`);
* training phase: gradients, activations of the policy pass over G rows (with gradient
  checkpointing: every layer's input plus one layer recomputed; without: every layer's
  activations), the trainable connector's activations, the completion-slice logits (bf16, plus the
  fp32 copies `selective_log_softmax` keeps for backward, plus the chunk the entropy log uses), and
  under ZeRO-3 the gathered working set (a couple of layers and the embedding);
* a fixed framework overhead (CUDA context, kernels, allocator slack).

The peak is persistent + the larger phase + overhead. Sizes are decimal GB (1e9 bytes).
Assumptions that a config does not say are arguments: prompt text tokens (128: system prompt,
question, options and the reasoning instruction in the Qwen tokenizer) and the overhead (2 GB).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tinyvr.config import TrainConfig, load_config
from tinyvr.errors import ConfigError

GB = 1e9
PROMPT_TOKENS = 128  # text tokens of a GRPO prompt (template + question + options), Qwen tokenizer
OVERHEAD_GB = 2.0  # CUDA context, cuBLAS/attention workspaces, allocator fragmentation
ENTROPY_CHUNK_ROWS = 4  # rows per fp32 chunk in selective_log_softmax / token_entropy (rl/policy.py)
PUBLISHED_PRESET = "tinyllava-video-3b"


@dataclass
class MemoryEstimate:
    """Bytes per GPU by component, the two phases and the peak."""

    label: str
    gpus: int
    zero: int
    components: dict[str, float]  # name -> bytes (persistent and per-phase parts)
    persistent: float
    generation: float  # phase-specific bytes on top of `persistent`
    training: float
    overhead: float
    params: dict[str, int]
    trainable: int
    rows: int
    seq_len: int
    notes: list[str] = field(default_factory=list)

    @property
    def peak(self) -> float:
        return self.persistent + max(self.generation, self.training) + self.overhead

    def fits(self, gpu_memory_gb: float) -> bool:
        return self.peak <= gpu_memory_gb * GB


# ---------------------------------------------------------------------------------------------
# the model


def resolve_model_config(cfg: TrainConfig):
    """(TinyVideoConfig, where it came from) for a training config.

    `model.init_from` with a config.json (tinyvr or reference layout) wins; a named but missing
    TinyLLaVA checkpoint with the default preset means the published model (its preset); else
    `model.preset` with `model.overrides`.
    """
    from tinyvr.model import build_config
    from tinyvr.model.configuration import TinyVideoConfig

    init = cfg.model.init_from
    if init and (Path(init) / "config.json").is_file():
        path = Path(init) / "config.json"
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: invalid JSON ({e.msg}, line {e.lineno})") from e
        if data.get("model_type") == "tinyllava":
            from tinyvr.model.reference import reference_to_config

            config = reference_to_config(data)
        else:
            config = TinyVideoConfig.from_dict(data)
        source = str(path)
    elif init and cfg.model.preset == "tiny" and "tinyllava" in init.lower():
        config = build_config(PUBLISHED_PRESET)
        source = f"preset {PUBLISHED_PRESET!r} ({init} not found; set model.preset to choose another)"
    else:
        config = build_config(cfg.model.preset, **(cfg.model.overrides or {}))
        source = f"preset {cfg.model.preset!r}"
    if cfg.model.num_frames:
        config.num_frames = cfg.model.num_frames
    return config, source


def _text_dims(config) -> dict:
    t = config.text_config
    heads = t.num_attention_heads
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // heads
    return {"hidden": t.hidden_size, "layers": t.num_hidden_layers, "heads": heads,
            "kv_heads": t.num_key_value_heads or heads, "head_dim": head_dim,
            "inter": t.intermediate_size, "vocab": t.vocab_size}


def _bytes_per_param(dtype: str) -> int:
    return 4 if dtype == "float32" else 2  # auto = bf16 on GPUs


# ---------------------------------------------------------------------------------------------
# the estimate


def estimate_memory(cfg: TrainConfig, *, gpus: int = 8, zero: int = 3, model_config=None,
                    params: dict[str, int] | None = None, prompt_tokens: int = PROMPT_TOKENS,
                    overhead_gb: float = OVERHEAD_GB, label: str | None = None) -> MemoryEstimate:
    """Per-GPU bytes of one training step of `cfg` on `gpus` GPUs with DeepSpeed ZeRO stage `zero`."""
    if gpus < 1:
        raise ConfigError(f"gpus must be >= 1, got {gpus}")
    if zero not in (0, 1, 2, 3):
        raise ConfigError(f"zero must be 0, 1, 2 or 3, got {zero}")
    notes: list[str] = []
    if model_config is None:
        model_config, source = resolve_model_config(cfg)
        notes.append(f"model: {source}")
    if params is None:
        from tinyvr.model import count_parameters

        params = count_parameters(model_config)
    d = _text_dims(model_config)
    total = params["total"]
    trainable = sum(params[p] for p in dict.fromkeys(cfg.model.trainable))
    w = _bytes_per_param(cfg.model.dtype)
    mixed = w == 2
    grpo = cfg.stage == "grpo"
    beta = cfg.rl.beta if grpo else 0.0

    # sequence: GRPO rows = prompts per GPU x G, each prompt + video tokens + completion
    n_video = model_config.num_queries
    if grpo:
        rows = cfg.optim.batch_size * cfg.rollout.num_generations
        new = cfg.rollout.max_new_tokens
        seq = prompt_tokens + n_video + new
        videos = cfg.optim.batch_size
    else:
        rows, new, videos = cfg.optim.batch_size, 0, cfg.optim.batch_size
        seq = cfg.data.max_length
    tokens = rows * seq

    def part(n: float, stage: int) -> float:  # partitioned from ZeRO `stage` on
        return n / gpus if zero >= stage else n

    c: dict[str, float] = {}
    # persistent
    c["policy weights"] = part(total * w, 3)
    c["AdamW m, v (fp32)"] = part(trainable * 8, 1)
    if mixed:
        c["fp32 master weights"] = part(trainable * 4, 1)
    if beta > 0:
        c["reference model"] = part(total * w, 3)
    persistent = sum(c.values())

    # generation phase
    gen: dict[str, float] = {}
    if grpo:
        gen["KV cache (generation)"] = rows * d["layers"] * 2 * d["kv_heads"] * d["head_dim"] * seq * w
        gen["sampling logits"] = rows * d["vocab"] * 4 * 2
        if zero >= 3:
            gen["weights gathered for generation"] = total * w - c["policy weights"]
    # training phase
    tr: dict[str, float] = {}
    tr["gradients"] = part(trainable * w, 2)
    per_layer = tokens * (8 * d["hidden"] + 4 * d["kv_heads"] * d["head_dim"] + 4 * d["inter"]) * w
    if cfg.model.gradient_checkpointing:
        tr["activations (checkpointed)"] = d["layers"] * tokens * d["hidden"] * w + per_layer
    else:
        tr["activations"] = d["layers"] * per_layer
    if "connector" in cfg.model.trainable:
        v = model_config.vision_config
        patches = (v.image_size // v.patch_size) ** 2 - (1 if model_config.vision_feature_select_strategy == "patch" else 0)
        n_feat = model_config.num_frames * patches
        inner = model_config.resampler_heads * model_config.resampler_head_dim
        per_video = n_feat * (v.hidden_size + d["hidden"] + model_config.resampler_depth * (2 * d["hidden"] + 2 * inner))
        tr["connector activations"] = videos * per_video * w
    kept = new + 1 if grpo else seq  # logits_to_keep: the completion slice only
    tr["logits (completion slice)"] = rows * kept * d["vocab"] * (w + 4) + 2 * min(rows, ENTROPY_CHUNK_ROWS) * kept * d["vocab"] * 4
    if zero >= 3:
        layer_params = (params["language_model"] - d["vocab"] * d["hidden"]) / max(d["layers"], 1)
        tr["ZeRO-3 gathered layers"] = (2 * layer_params + d["vocab"] * d["hidden"]) * w
    c.update(gen)
    c.update(tr)
    if grpo and beta == 0:
        notes.append("beta = 0: no reference model")
    name = label or f"ZeRO-{zero} on {gpus} GPU{'s' if gpus > 1 else ''}"
    return MemoryEstimate(name, gpus, zero, c, persistent, sum(gen.values()), sum(tr.values()),
                          overhead_gb * GB, params, trainable, rows, seq, notes)


# ---------------------------------------------------------------------------------------------
# the command


def _gb(x: float) -> str:
    return f"{x / GB:.2f}"


def render(cfg: TrainConfig, estimates: list[MemoryEstimate], gpu_memory_gb: float, config_path=None) -> str:
    e0 = estimates[0]
    p = e0.params
    lines = [f"tinyvr estimate-memory{f': {config_path}' if config_path else ''} (stage {cfg.stage})"]
    lines += [f"  {n}" for n in e0.notes]
    parts = ", ".join(f"{k.replace('_', ' ')} {p[k] / 1e9:.3f} B ({'trainable' if k in cfg.model.trainable else 'frozen'})"
                      for k in ("vision_tower", "connector", "language_model"))
    lines.append(f"  parameters: {p['total'] / 1e9:.3f} B = {parts}")
    lines.append(f"  trainable: {e0.trainable / 1e9:.3f} B; weights {cfg.model.dtype} "
                 f"({_bytes_per_param(cfg.model.dtype)} bytes), AdamW states fp32"
                 f"{', fp32 master weights' if _bytes_per_param(cfg.model.dtype) == 2 else ''}; "
                 f"gradient checkpointing {'on' if cfg.model.gradient_checkpointing else 'off'}")
    if cfg.stage == "grpo":
        lines.append(f"  per GPU and step: {cfg.optim.batch_size} prompt(s) x G={cfg.rollout.num_generations} = "
                     f"{e0.rows} rows x {e0.seq_len} tokens ({PROMPT_TOKENS} prompt + "
                     f"{e0.seq_len - PROMPT_TOKENS - cfg.rollout.max_new_tokens} video + "
                     f"{cfg.rollout.max_new_tokens} new); beta={cfg.rl.beta}"
                     f"{' (reference model)' if cfg.rl.beta > 0 else ' (no reference model)'}")
    else:
        lines.append(f"  per GPU and step: {e0.rows} rows x {e0.seq_len} tokens (data.max_length)")
    names = list(dict.fromkeys(k for e in estimates for k in e.components))
    width = max(len(n) for n in names + ["peak (persistent + larger phase + overhead)"]) + 2
    cols = [e.label for e in estimates]
    cw = max(16, *(len(c) + 2 for c in cols))
    lines.append("")
    lines.append("GB per GPU".ljust(width) + "".join(c.rjust(cw) for c in cols))
    for n in names:
        lines.append(n.ljust(width) + "".join((_gb(e.components[n]) if n in e.components else "-").rjust(cw)
                                              for e in estimates))
    lines.append("framework overhead".ljust(width) + "".join(_gb(e.overhead).rjust(cw) for e in estimates))
    lines.append("-" * (width + cw * len(estimates)))
    lines.append("persistent".ljust(width) + "".join(_gb(e.persistent).rjust(cw) for e in estimates))
    if cfg.stage == "grpo":
        lines.append("generation phase".ljust(width) + "".join(_gb(e.generation).rjust(cw) for e in estimates))
    lines.append("training phase".ljust(width) + "".join(_gb(e.training).rjust(cw) for e in estimates))
    lines.append("peak (persistent + larger phase + overhead)".ljust(width)
                 + "".join(_gb(e.peak).rjust(cw) for e in estimates))
    lines.append(f"fits in {gpu_memory_gb:g} GB".ljust(width)
                 + "".join(("yes" if e.fits(gpu_memory_gb) else "NO").rjust(cw) for e in estimates))
    lines.append("")
    lines.append("Analytic estimate (decimal GB); real runs add allocator fragmentation and temporary buffers.")
    return "\n".join(lines)


def estimate_memory_cli(config_path, overrides=None, gpus: int = 8, zero: int = 3,
                        gpu_memory_gb: float = 80.0) -> str:
    """The `tinyvr estimate-memory` report: the requested ZeRO set-up and one GPU without ZeRO."""
    cfg = load_config(config_path, list(overrides or []))
    model_config, source = resolve_model_config(cfg)
    from tinyvr.model import count_parameters

    params = count_parameters(model_config)
    first = estimate_memory(cfg, gpus=gpus, zero=zero, model_config=model_config, params=params)
    first.notes.insert(0, f"model: {source}")
    single = estimate_memory(cfg, gpus=1, zero=0, model_config=model_config, params=params,
                             label=f"one {gpu_memory_gb:g} GB GPU")
    return render(cfg, [first, single], gpu_memory_gb, config_path)


__all__ = ["MemoryEstimate", "estimate_memory", "estimate_memory_cli", "resolve_model_config", "render"]
