"""Two CPU processes (gloo) give the same update as one process over the same global batch."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

G = 2  # completions per prompt


def _batch(model, processor, seed=0):
    """A fixed rollout batch: 4 prompts x G completions, random completion ids and advantages."""
    g = torch.Generator().manual_seed(seed)
    P = 4
    prompts = [processor.encode_prompt(f"Question {i}: which colour is the {['box', 'ball', 'cone', 'star'][i]}?")
               for i in range(P)]
    cfg = model.config
    feats = torch.randn(P, cfg.num_frames * model.config.patches_per_frame, cfg.vision_config.hidden_size, generator=g)
    batch_p = processor.collate([{"input_ids": p} for p in prompts], padding_side="left")
    c_ids = torch.randint(1, cfg.text_config.vocab_size, (P * G, 6), generator=g)
    mask = torch.ones_like(c_ids)
    mask[1, 4:] = 0
    adv = torch.randn(P * G, generator=g)
    return feats, batch_p["input_ids"].repeat_interleave(G, 0), batch_p["attention_mask"].repeat_interleave(G, 0), c_ids, mask, adv


def _update(model, ref, rows, cfg, env):
    from tinyvr.recipes.common import Timer, build_scheduler
    from tinyvr.recipes.grpo import grpo_update

    feats, p_ids, p_mask, c_ids, mask, adv = rows
    # plain SGD: the weight change is the (averaged) gradient itself, so the comparison is linear
    # (Adam's first step is ~lr*sign(g) and flips on gradients that are zero up to rounding)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    sched = build_scheduler(opt, cfg, 10)

    class Ctx:
        dist = env

    grpo_update(model, ref, (feats, p_ids, p_mask, c_ids), adv, mask, cfg, opt, sched, Ctx, Timer())
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _setup():
    import copy

    from tinyvr.config import load_config
    from tinyvr.model import set_trainable
    from tinyvr.recipes.common import new_model

    cfg = load_config(None, ["stage=grpo", f"rollout.num_generations={G}", "optim.lr=1e-2",
                             "rl.noise_std=0.0", "optim.max_grad_norm=0"])
    torch.manual_seed(0)
    model, processor = new_model("tiny", seed=0)
    set_trainable(model, ["connector", "language_model"])
    ref = copy.deepcopy(model).eval()
    return cfg, model, processor, ref


def _worker(rank, world, port, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from tinyvr.utils.distributed import cleanup, init_distributed

    env = init_distributed()
    cfg, model, processor, ref = _setup()
    feats, p_ids, p_mask, c_ids, mask, adv = _batch(model, processor)
    P = feats.shape[0] // world
    rows = slice(rank * P * G, (rank + 1) * P * G)
    local = (feats[rank * P:(rank + 1) * P], p_ids[rows], p_mask[rows], c_ids[rows], mask[rows], adv[rows])
    state = _update(model, ref, local, cfg, env)
    if rank == 0:
        torch.save(state, out_path)
    cleanup(env)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    from tinyvr.utils.distributed import DistEnv

    torch.set_num_threads(1)
    cfg, model, processor, ref = _setup()
    rows = _batch(model, processor)
    # equal rows per rank and equal per-rank masks weights: "sequence" aggregation is a mean over
    # sequences, so the mean of the two ranks' means is the global mean
    single = _update(model, ref, rows, cfg, DistEnv())
    out = tmp_path / "rank0.pt"
    mp.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True, start_method="spawn")
    multi = torch.load(out, weights_only=True)
    changed = 0
    for k, v in single.items():
        assert torch.allclose(v, multi[k], atol=1e-5, rtol=1e-4), k
        changed += int(not torch.equal(v, _setup()[1].state_dict()[k])) if k.startswith("connector.linear") else 0
    assert changed > 0  # the update really moved the weights
