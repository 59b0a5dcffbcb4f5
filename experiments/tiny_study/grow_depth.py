"""Grow a foundation's LLM by layers that start as the identity, ready for another align part.

grow_depth.py SRC_FOUNDATION OUT AFTER [AFTER ...]

SRC_FOUNDATION: a finished foundation folder (its `model/` and `init/`). OUT gets `init/` (the tiny
preset with more LLM layers, SRC's tokenizer), `vision/tower.safetensors` (SRC's tower) and
`language/lm.safetensors`: SRC's aligned LLM with one new layer after each listed old layer
(1-based; 0 = before the first). A new layer's output projections (attention and MLP) are zero, so
it adds nothing to the residual stream at the start and the grown LLM computes what SRC's did
(checked here on a prompt). Then: `tinyvr foundation --out OUT --part align ...` (a fresh connector).
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tinyvr.recipes.common import init_model_folder, load_model

src, out, after = Path(sys.argv[1]), Path(sys.argv[2]), sorted(int(a) for a in sys.argv[3:])
old = load_file(src / "model" / "model.safetensors")
n_old = 1 + max(int(k.split(".")[3]) for k in old if k.startswith("language_model.model.layers."))
n_new = n_old + len(after)
init_model_folder("tiny", out / "init", seed=0, tokenizer=str(src / "init"),
                  overrides={"text_config": {"num_hidden_layers": n_new}})
fresh = load_file(out / "init" / "model.safetensors")

# old layer i (0-based) goes to slot i + (number of new layers inserted at or before it)
slot = {i: i + sum(1 for a in after if a <= i) for i in range(n_old)}
new_slots = sorted(set(range(n_new)) - set(slot.values()))
lm = {}
for k, v in old.items():
    if not k.startswith("language_model."):
        continue
    k = k[len("language_model."):]
    if k.startswith("model.layers."):
        parts = k.split(".")
        parts[2] = str(slot[int(parts[2])])
        k = ".".join(parts)
    lm[k] = v
for s in new_slots:
    pre = f"model.layers.{s}."
    for k, v in fresh.items():
        if k.startswith("language_model." + pre):
            k = k[len("language_model."):]
            lm[k] = torch.zeros_like(v) if k.endswith(("o_proj.weight", "down_proj.weight")) else v
lm.pop("lm_head.weight", None)  # tied to the embeddings
(out / "language").mkdir(parents=True, exist_ok=True)
(out / "vision").mkdir(parents=True, exist_ok=True)
save_file({k: v.contiguous() for k, v in lm.items()}, out / "language" / "lm.safetensors")
save_file({k[len("vision_tower."):]: v.contiguous() for k, v in old.items() if k.startswith("vision_tower.")},
          out / "vision" / "tower.safetensors")

# the grown LLM computes what the old one did
a, _ = load_model(src / "model")
b, _ = load_model(out / "init")
b.language_model.load_state_dict(lm, strict=False)
b.language_model.tie_weights()
ids = torch.arange(5, 45).unsqueeze(0)
with torch.no_grad():
    diff = (a.language_model(input_ids=ids).logits - b.language_model(input_ids=ids).logits).abs().max().item()
print(f"{n_old} -> {n_new} layers (new at slots {new_slots}); max logit difference {diff:.2e}")
assert diff < 1e-4, diff
