"""dist.strategy=fsdp: two CPU processes (gloo) with the policy sharded by FSDP2 give the same
rollout, the same update and the same checkpoint files as one process over the same global batch,
and checkpoints move between the two in both directions. The recipes themselves (GRPO and SFT,
checkpoints, resume, end-of-stage eval) run under fsdp and match a ddp run of the same two ranks.

One spawn of two workers does everything (module fixture, ~30 s on 2 cores, most of it process
start-up); the tests compare its outputs with a single-process run of the same steps (batches and
approach of test_distributed.py).
"""

import copy
import math
import os
import shutil
import types
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.recipes.test_distributed import G, _batch, _free_port, _setup

WORLD = 2
# The gradient norm of the fixed batch is ~6: clipping to 0.5 is active, and its scale must come
# from the global norm over all shards (a per-shard norm would change every update).
OVERRIDES = ["optim.max_grad_norm=0.5"]


def _cfg():
    from tinyvr.config import load_config

    return load_config(None, ["stage=grpo", f"rollout.num_generations={G}", "optim.lr=1e-2",
                              "rl.noise_std=0.0", *OVERRIDES])


def _local(rows, rank, world):
    """This rank's slice of a global batch (whole prompt groups)."""
    feats, p_ids, p_mask, c_ids, mask, adv = rows
    P = feats.shape[0] // world
    r = slice(rank * P * G, (rank + 1) * P * G)
    return feats[rank * P:(rank + 1) * P], p_ids[r], p_mask[r], c_ids[r], mask[r], adv[r]


def _trainer(model, cfg):
    from tinyvr.recipes.common import build_scheduler

    # SGD with momentum: the update and the momentum buffer are linear in the (clipped) gradient,
    # so one and two processes agree to rounding; the buffer is optimizer state to checkpoint
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0, momentum=0.9)
    return opt, build_scheduler(opt, cfg, 10)


def _step(model, ref, rows, cfg, env, opt, sched):
    from tinyvr.recipes.common import Timer
    from tinyvr.recipes.grpo import grpo_update

    feats, p_ids, p_mask, c_ids, mask, adv = rows
    return grpo_update(model, ref, (feats, p_ids, p_mask, c_ids), adv, mask, cfg, opt, sched,
                       types.SimpleNamespace(dist=env), Timer())


def _ctx(env, run_dir):
    from tinyvr.utils.checkpoint import CheckpointManager

    return types.SimpleNamespace(dist=env, is_main=env.rank == 0, ckpt=CheckpointManager(run_dir),
                                 generator=torch.Generator().manual_seed(3))


def _save(ctx, model, processor, opt, sched, step=1):
    from tinyvr.data.datasets import BadSampleTracker
    from tinyvr.recipes.common import DataOrder
    from tinyvr.recipes.resume import save_checkpoint

    save_checkpoint(ctx, step, model, processor, opt, sched, DataOrder(8, 0, ctx.dist.rank, ctx.dist.world_size),
                    BadSampleTracker(0.5))
    return ctx.ckpt.latest()


def _restore(ckpt, ctx, model, opt, sched):
    from tinyvr.data.datasets import BadSampleTracker
    from tinyvr.recipes.common import DataOrder
    from tinyvr.recipes.resume import restore_training

    return restore_training(ckpt, model, opt, sched, DataOrder(8, 0, ctx.dist.rank, ctx.dist.world_size),
                            BadSampleTracker(0.5), ctx)


def _greedy(model, processor):
    from tinyvr.rl.rollout import RolloutEngine, SamplingParams
    from tinyvr.utils.distributed import gathered

    feats = _batch(model, processor)[0]
    prompts = [processor.encode_prompt(f"Question {i}: what moves first?") for i in range(feats.shape[0])]
    model.eval()
    with torch.no_grad(), gathered(model):
        roll = RolloutEngine(model, processor).generate(
            prompts, model.connector(feats), SamplingParams(num_generations=2, max_new_tokens=8, temperature=0.0))
    model.train()
    return roll.completion_ids


def _full(model):
    from tinyvr.utils.distributed import full_state_dict

    full = full_state_dict(model)
    return {k: v.clone() for k, v in (full if full is not None else model.state_dict()).items()}


RECIPE = {  # two steps per stage on the tiny data, a checkpoint after step 1
    "grpo": ["optim.max_steps=2", "optim.batch_size=1", "rollout.num_generations=2", "rollout.max_new_tokens=8",
             "run.save_every=1", "run.threads=1", "run.rollout_log_every=0", "optim.lr=1e-3"],
    "sft": ["optim.max_steps=2", "optim.batch_size=2", "run.save_every=1", "run.threads=1", "optim.lr=1e-3"],
}


def _recipes(rank, out_dir, init, data):
    """GRPO and SFT under ddp, then fsdp (with the end-of-stage eval), then an fsdp resume."""
    from tests.recipes.conftest import stage_cfg
    from tinyvr.recipes import run_stage
    from tinyvr.utils.distributed import DistEnv, barrier

    out, init, data = Path(out_dir), Path(init), Path(data)
    evals = [f"data.eval_file={data / 'test.jsonl'}", "data.eval_limit=2", "eval.max_new_tokens=8"]
    for stage in ("grpo", "sft"):
        for strategy in ("ddp", "fsdp"):
            run_stage(stage_cfg(stage, out / f"{stage}-{strategy}", init, data, *RECIPE[stage],
                                f"dist.strategy={strategy}", *(evals if strategy == "fsdp" else [])))
    # resume the fsdp GRPO run from its step-1 checkpoint (a copy of the run folder)
    if rank == 0:
        shutil.copytree(out / "grpo-fsdp", out / "grpo-fsdp-resumed")
        shutil.rmtree(out / "grpo-fsdp-resumed" / "model")
    barrier(DistEnv(rank, 2))
    run_stage(stage_cfg("grpo", out / "grpo-fsdp-resumed", init, data, *RECIPE["grpo"], "dist.strategy=fsdp"),
              resume=True)


def _worker(rank, world, port, out_dir, single_ckpt, init, data):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from torch.distributed.tensor import DTensor

    from tinyvr.utils.distributed import cleanup, init_distributed, shard_model

    env = init_distributed("fsdp")
    assert env.sharded
    cfg = _cfg()
    _, model, processor, ref = _setup()
    model = shard_model(model, env)
    trainable = [p for p in model.parameters() if p.requires_grad]
    out = {"all_dtensor": all(isinstance(p, DTensor) for p in trainable),
           "local_numel": sum(p.to_local().numel() for p in trainable),
           "full_numel": sum(p.numel() for p in trainable),
           "rollout": _greedy(model, processor)}
    embed = model.language_model.model.embed_tokens.weight
    out["resharded_after_rollout"] = isinstance(embed, DTensor) and embed.to_local().shape[0] < embed.shape[0]
    # step 1 on batch A, checkpoint written by the FSDP run
    opt, sched = _trainer(model, cfg)
    out["metrics1"] = _step(model, ref, _local(_batch(model, processor, seed=0), rank, world), cfg, env, opt, sched)
    out["params1"] = _full(model)
    ctx = _ctx(env, os.path.join(out_dir, "fsdp_run"))
    out["ckpt"] = str(_save(ctx, model, processor, opt, sched))
    # a fresh sharded model resumes from the single-process checkpoint, then step 2 on batch B
    _, model2, _, _ = _setup()
    model2 = shard_model(model2, env)
    opt2, sched2 = _trainer(model2, cfg)
    out["resumed_step"] = _restore(single_ckpt, ctx, model2, opt2, sched2)
    _step(model2, ref, _local(_batch(model2, processor, seed=1), rank, world), cfg, env, opt2, sched2)
    out["params2"] = _full(model2)
    if rank == 0:
        torch.save(out, os.path.join(out_dir, "rank0.pt"))
    _recipes(rank, out_dir, init, data)
    cleanup(env)


def single_process_reference(cfg, tmp):
    """Two steps in one process over the whole global batch: the weights before and after each,
    the rollout, the metrics and optimizer state of step 1, and the checkpoint after step 1."""
    from tinyvr.utils.distributed import DistEnv

    _, model, processor, ref = _setup()
    initial = _full(model)
    single = {"rollout": _greedy(model, processor)}
    opt, sched = _trainer(model, cfg)
    single["metrics1"] = _step(model, ref, _batch(model, processor, seed=0), cfg, DistEnv(), opt, sched)
    single["params1"] = _full(model)
    single["optim1"] = copy.deepcopy(opt.state_dict())  # step 2 updates the buffers in place
    ckpt = _save(_ctx(DistEnv(), tmp / "single_run"), model, processor, opt, sched)
    _step(model, ref, _batch(model, processor, seed=1), cfg, DistEnv(), opt, sched)
    single["params2"] = _full(model)
    return initial, single, ckpt, processor, ref


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model, tiny_data):
    """The single-process reference steps, then the same steps by two FSDP workers."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("fsdp")
    cfg = _cfg()
    initial, single, ckpt, processor, ref = single_process_reference(cfg, tmp)
    mp.start_processes(_worker, args=(WORLD, _free_port(), str(tmp), str(ckpt), str(tiny_model), str(tiny_data)),
                       nprocs=WORLD, join=True, start_method="spawn")
    multi = torch.load(tmp / "rank0.pt", weights_only=False)
    return types.SimpleNamespace(initial=initial, single=single, multi=multi, cfg=cfg, processor=processor,
                                 ref=ref, tmp=tmp, tiny_model=tiny_model)


def _assert_same_update(before, after_single, after_multi, where):
    """The weight changes agree to fp32 rounding (a few ulp of weights near 1), and they are real
    changes (a typical change is ~3e-4, clipping makes the total 0.5)."""
    moved = 0
    for k, v in after_single.items():
        d1, d2 = v - before[k], after_multi[k] - before[k]
        torch.testing.assert_close(d2, d1, rtol=1e-3, atol=1e-6, msg=lambda m: f"{where} {k}: {m}")
        moved += int(d1.abs().max() > 1e-5)
    return moved


def test_policy_is_sharded(runs):
    m = runs.multi
    assert m["all_dtensor"]
    assert m["local_numel"] <= 0.51 * m["full_numel"]  # each rank holds half of the trainable weights


def test_rollout_under_fsdp_matches_one_process(runs):
    """Greedy generation through the sharded model (KV cache, decode steps) gives the same tokens,
    and the weights are sharded again afterwards."""
    assert torch.equal(runs.multi["rollout"], runs.single["rollout"])
    assert runs.single["rollout"].shape == (8, 8)
    assert runs.multi["resharded_after_rollout"]


def test_fsdp_update_matches_one_process(runs):
    s, m = runs.single, runs.multi
    assert s["metrics1"]["grad_norm"] > 5 * runs.cfg.optim.max_grad_norm  # clipping was active
    assert m["metrics1"]["grad_norm"] == pytest.approx(s["metrics1"]["grad_norm"], rel=1e-4)
    moved = _assert_same_update(runs.initial, s["params1"], m["params1"], "step 1")
    assert moved > 50  # connector, every decoder layer, embeddings: the update moved the weights
    assert set(m["params1"]) == set(s["params1"])


def test_fsdp_checkpoint_loads_in_one_process(runs, tmp_path):
    """The FSDP run's checkpoint is a full model folder + the single-process optimizer layout:
    a plain process loads it, has the 1-rank weights, and resumes to the 1-rank step 2."""
    from pathlib import Path

    from tinyvr.recipes.common import load_model
    from tinyvr.utils.checkpoint import CheckpointManager
    from tinyvr.utils.distributed import DistEnv

    ckpt = Path(runs.multi["ckpt"])
    single_ckpt = runs.tmp / "single_run" / "checkpoints" / ckpt.name
    assert sorted(p.name for p in (ckpt / "model").iterdir()) == sorted(p.name for p in (single_ckpt / "model").iterdir())
    assert _weights(ckpt / "model").keys() == _weights(single_ckpt / "model").keys()  # tied LM head written once
    loaded, _ = load_model(ckpt / "model")
    plain = {k: v for k, v in loaded.state_dict().items()}
    _assert_same_update(runs.initial, runs.single["params1"], plain, "loaded")
    # optimizer state: same indices and momentum buffers as the single-process optimizer
    state = CheckpointManager.load_state(ckpt)["optimizer"]
    ref_state = runs.single["optim1"]
    assert state["param_groups"] == ref_state["param_groups"]
    assert sorted(state["state"]) == sorted(ref_state["state"]) and len(state["state"]) > 50
    for i, st in ref_state["state"].items():
        torch.testing.assert_close(state["state"][i]["momentum_buffer"], st["momentum_buffer"], rtol=1e-3,
                                   atol=1e-7)
    # resume in one process from the FSDP checkpoint: step 2 as in the uninterrupted 1-rank run
    _, model, processor, _ = _setup()
    opt, sched = _trainer(model, runs.cfg)
    assert _restore(ckpt, _ctx(DistEnv(), tmp_path), model, opt, sched) == 1
    _step(model, runs.ref, _batch(model, processor, seed=1), runs.cfg, DistEnv(), opt, sched)
    _assert_same_update(runs.single["params1"], runs.single["params2"], _full(model), "resumed in one process")


def test_fsdp_resumes_from_a_one_process_checkpoint(runs):
    """Sharded model + optimizer restored from the single-process checkpoint: step 2 matches."""
    assert runs.multi["resumed_step"] == 1
    moved = _assert_same_update(runs.single["params1"], runs.single["params2"], runs.multi["params2"],
                                "resumed under fsdp")
    assert moved > 50


VOLATILE = ("time/", "tokens_per_s")


def _metrics(run_dir):
    from tinyvr.utils.logging import read_jsonl

    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in read_jsonl(run_dir / "metrics.jsonl")]


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("stage", ["grpo", "sft"])
def test_recipe_under_fsdp_matches_ddp(runs, stage):
    """The same two ranks, the same data and seeds: the fsdp recipe logs the same numbers and ends
    with the same weights as the ddp one (reduce-scatter vs all-reduce: fp32 rounding apart)."""
    ddp, fsdp = runs.tmp / f"{stage}-ddp", runs.tmp / f"{stage}-fsdp"
    a, b = _metrics(ddp), _metrics(fsdp)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k, v in ra.items():
            assert rb[k] == pytest.approx(v, rel=1e-4, abs=1e-6), (stage, ra["step"], k)
    key = "grad_norm"
    assert all(math.isfinite(r[key]) and r[key] > 0 for r in b)
    wa, wb = _weights(ddp / "model"), _weights(fsdp / "model")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-6, msg=lambda m: f"{stage} {k}: {m}")
    init = _weights(Path(runs.tiny_model))
    assert any(not torch.equal(wa[k], init[k]) for k in wa)  # training changed the weights
    # the fsdp run's step-1 checkpoint is a complete unsharded one
    ckpt = fsdp / "checkpoints" / "step_000001"
    assert (ckpt / "DONE").is_file() and (ckpt / "trainer_state.pt").is_file()
    assert _weights(ckpt / "model").keys() == wa.keys()
    # end-of-stage eval ran on rank 0 from the saved full model
    results = [p for p in (fsdp / "eval").rglob("results.json")]
    assert results, "no end-of-stage eval results"


def test_grpo_resumes_under_fsdp(runs):
    """Resumed from its step-1 checkpoint, the 2-rank fsdp GRPO run keeps step 1's log and redoes
    step 2 exactly as the uninterrupted run did: each rank restores its own RNG states (rollout
    sampling, advantage noise) and data position, not rank 0's."""
    orig, resumed = _metrics(runs.tmp / "grpo-fsdp"), _metrics(runs.tmp / "grpo-fsdp-resumed")
    assert [r["step"] for r in resumed] == [r["step"] for r in orig] == [1, 2]
    assert resumed[0] == orig[0]
    assert math.isfinite(resumed[1]["grad_norm"])
    assert {"reward", "loss", "kl", "completion_length", "entropy", "grad_norm"} <= resumed[1].keys()
    assert resumed[1] == orig[1]  # every logged metric of the step after the checkpoint, bit for bit
    wo, wr = _weights(runs.tmp / "grpo-fsdp" / "model"), _weights(runs.tmp / "grpo-fsdp-resumed" / "model")
    assert wr.keys() == wo.keys()
    for k in wo:
        assert torch.equal(wr[k], wo[k]), k
    # one file per rank beside the training state, and the ranks' sampling generators differ
    from tinyvr.utils.checkpoint import CheckpointManager

    ckpt = runs.tmp / "grpo-fsdp" / "checkpoints" / "step_000001"
    ranks = [CheckpointManager.load_rank_state(ckpt, r) for r in range(WORLD)]
    assert [r["rank"] for r in ranks] == list(range(WORLD))
    assert not torch.equal(ranks[0]["rng"]["generator"], ranks[1]["rng"]["generator"])
