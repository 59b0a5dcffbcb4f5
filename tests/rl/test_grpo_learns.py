"""The GRPO loop learns: rollout -> reward -> group advantages (+ noise) -> `grpo_update`, repeated,
raises a reward the starting policy earns only half the time. Guards against the errors that leave
every unit right but the whole loop flat or backwards (a sign, a mask or an advantage out of line).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch

from tinyvr.rl.advantages import group_advantages
from tinyvr.rl.rollout import RolloutEngine, SamplingParams

G = 8
STEPS = 20
QUESTIONS = ["Which direction does the red circle move?", "How many shapes are in the video?"]


def test_grpo_loop_raises_the_reward():
    from tinyvr.config import load_config
    from tinyvr.recipes.common import Timer, build_optimizer, build_scheduler, new_model
    from tinyvr.recipes.grpo import grpo_update
    from tinyvr.utils.distributed import DistEnv

    model, processor = new_model("tiny", seed=0)
    model = model.float()
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    vocab = model.config.text_config.vocab_size
    prompts = [[t for t in processor.encode_prompt(q) if t != model.config.image_token_index] for q in QUESTIONS]
    cfg = load_config(None, ["stage=grpo", f"rollout.num_generations={G}", "optim.lr=3e-3", "rl.beta=0.04",
                             "optim.scheduler=constant", "optim.warmup_ratio=0"])
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, STEPS)
    engine = RolloutEngine(model, processor, eos_token_id=-1)  # never stops: every row 3 tokens
    params = SamplingParams(num_generations=G, max_new_tokens=3, temperature=1.0, top_k=0, top_p=1.0)
    gen = torch.Generator().manual_seed(0)
    batch_p = processor.collate([{"input_ids": p} for p in prompts], padding_side="left")
    p_ids = batch_p["input_ids"].repeat_interleave(G, 0)
    p_mask = batch_p["attention_mask"].repeat_interleave(G, 0)

    def reward(ids):  # 1 when the first new token lies in the lower half of the vocabulary
        return (ids[:, 0] < vocab // 2).float()

    rates = []
    for _ in range(STEPS):
        model.eval()
        roll = engine.generate(prompts, None, params, gen, decode_text=False)
        model.train()
        r = reward(roll.completion_ids)
        rates.append(r.mean().item())
        adv = group_advantages(r, G, noise_std=0.02, generator=gen)
        grpo_update(model, ref, (None, p_ids, p_mask, roll.completion_ids), adv, roll.completion_mask, cfg, opt,
                    sched, SimpleNamespace(dist=DistEnv()), Timer())
    model.eval()
    after = reward(engine.generate(prompts * 8, None, params, gen, decode_text=False).completion_ids).mean().item()
    assert 0.2 < rates[0] < 0.8  # the start earns it about half the time: the groups carry a signal
    assert after > 0.9, (rates, after)


def test_greedy_accuracy_reads_the_greedy_rows_only():
    from tinyvr.recipes.grpo import greedy_accuracy

    # 2 prompts x G=4; rows 0 and 4 are the greedy ones
    parts = {"accuracy": [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]}
    assert greedy_accuracy(parts, 4, 1) == {"greedy_accuracy": 0.5}
    assert greedy_accuracy(parts, 4, 2) == {"greedy_accuracy": 0.5}  # rows 0, 1, 4, 5
    assert greedy_accuracy({"accuracy": [0.0, 1.0] * 4}, 4, 1) == {"greedy_accuracy": 0.0}
    assert greedy_accuracy(parts, 4, 0) == {}  # no greedy rows: nothing logged
