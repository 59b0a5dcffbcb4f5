"""`tinyvr infer`: one video, one question, the model's answer."""

from __future__ import annotations

import torch

from tinyvr.data.template import OPTION_SUFFIX, REASON_SUFFIX
from tinyvr.errors import ConfigError


def build_question(question: str, options: list[str] | None, mode: str) -> str:
    """The training prompt layout: options under `Options:`, then the mode's instruction."""
    text = question.strip()
    if options:
        letters = [o.split(".", 1)[0].strip() for o in options]
        if not all(len(x) == 1 and x.isalpha() for x in letters):
            raise ConfigError(f"--options: each option must look like 'A. text', got {options!r}")
        text += "\nOptions:\n" + "\n".join(o.strip() for o in options)
    return f"{text} {REASON_SUFFIX}" if mode == "reason" else f"{text}\n{OPTION_SUFFIX}"


def infer(model_dir, video, question, options=None, mode="reason", max_new_tokens=256,
          temperature=0.0, seed=0, num_frames=0, *, dtype="auto", attn_implementation=None,
          tokenizer_dir=None, device="auto") -> str:
    from tinyvr.data.feature_cache import VideoInputs
    from tinyvr.recipes.common import load_model
    from tinyvr.rl.rollout import RolloutEngine, SamplingParams
    from tinyvr.utils.device import pick_device, pick_dtype

    if max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens: {max_new_tokens} must be >= 1")
    if temperature < 0:
        raise ConfigError(f"--temperature: {temperature} must be >= 0")
    device = pick_device(device)
    model, processor = load_model(model_dir, device, pick_dtype(dtype, device), tokenizer_dir=tokenizer_dir,
                                  attn_implementation=attn_implementation)
    model.eval()
    if num_frames:
        processor.num_frames = num_frames
    feats = VideoInputs(model, processor, cache=False)([video])["video_features"]
    ids = processor.encode_prompt(build_question(question, options, mode))
    params = SamplingParams(num_generations=1, max_new_tokens=max_new_tokens, temperature=temperature,
                            top_k=50 if temperature > 0 else 0)
    with torch.no_grad():
        roll = RolloutEngine(model, processor).generate([ids], model.connector(feats), params,
                                                        torch.Generator().manual_seed(seed))
    return roll.texts[0]


def infer_cli(a) -> str:
    """`tinyvr infer` from its flags; with `--config FILE` (the same typed YAML as `tinyvr eval
    --config`) the model, dtype, attention, tokenizer, frames, decoding and seed come from the
    file wherever the flag is not given."""
    from tinyvr.recipes.evaluate import resolve_eval_settings

    st = resolve_eval_settings(a, command="infer", required=("model",))
    mode = a.mode or "reason"
    tokens = a.max_new_tokens if a.max_new_tokens is not None else (st.max_new_tokens.get(mode) or 256)
    return infer(st.model, a.video, a.question, a.options, mode, max_new_tokens=tokens,
                 temperature=st.temperature, seed=st.seed, num_frames=st.num_frames, dtype=st.dtype,
                 attn_implementation=st.attn_implementation, tokenizer_dir=st.tokenizer or None,
                 device=st.device)
