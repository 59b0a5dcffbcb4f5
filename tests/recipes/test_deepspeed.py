"""dist.strategy=deepspeed: two CPU processes (gloo) with the policy under DeepSpeed ZeRO-3 give
the same rollout, the same update (clipping active) and the same checkpoint files as one process
over the same global batch, and checkpoints move between the two in both directions. The recipes
(GRPO and SFT with gradient accumulation, checkpoints, resume, end-of-stage eval) run under
deepspeed and match a ddp run of the same two ranks.

One spawn of two workers does everything (module fixture, ~50 s on 2 busy cores: the unit
steps, five 2-step recipe runs, process start-up and DeepSpeed's import); the tests compare its outputs with a single-process run of the
same steps (batches, optimizer and helpers of test_fsdp.py). Every weight is partitioned
(`stage3_param_persistence_threshold: 0`): DeepSpeed's default keeps parameters under 1e5
elements whole, which is most of the tiny model.
"""

import json
import math
import os
import shutil
import types
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

pytest.importorskip("deepspeed", reason="dist.strategy=deepspeed needs the deepspeed package "
                                        "(pip install -e .[deepspeed])")

from tests.recipes.test_distributed import _batch, _free_port, _setup  # noqa: E402
from tests.recipes.test_fsdp import (RECIPE, _assert_same_update, _cfg, _ctx, _full, _greedy,  # noqa: E402
                                     _local, _metrics, _restore, _save, _step, _trainer, _weights,
                                     single_process_reference)

WORLD = 2
ZERO = {"zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}
# SFT with two micro-batches per step: the second backward must add to ZeRO-3's gradient partitions
DS_RECIPE = {"grpo": RECIPE["grpo"], "sft": [*RECIPE["sft"], "optim.grad_accum=2"]}


def _engine(model, env, cfg):
    """SGD with momentum (test_fsdp's `_trainer`) under a ZeRO-3 engine."""
    from tinyvr.utils.distributed import init_deepspeed

    opt, sched = _trainer(model, cfg)
    init_deepspeed(model, opt, env, micro_batch=4, max_grad_norm=cfg.optim.max_grad_norm)
    return opt, sched


def _nonfinite_step(model, processor, opt, env):
    """A finite loss with non-finite gradients (d sqrt(x)/dx at 0): the step must be skipped."""
    from tinyvr.utils.distributed import backward, clip_and_step

    feats = _batch(model, processor, seed=3)[0][:1]
    loss = torch.sqrt(model.connector(feats).sum() * 0.0)
    assert torch.isfinite(loss)
    backward(loss, model, env)
    return clip_and_step(model, opt, 0.5, env)


def _recipes(rank, out_dir, init, data, ds_json):
    """GRPO and SFT under ddp, then deepspeed (with the end-of-stage eval), then a deepspeed resume."""
    from tests.recipes.conftest import stage_cfg
    from tinyvr.recipes import run_stage
    from tinyvr.utils.distributed import DistEnv, barrier

    out, init, data = Path(out_dir), Path(init), Path(data)
    evals = [f"data.eval_file={data / 'test.jsonl'}", "data.eval_limit=2", "eval.max_new_tokens=8"]
    ds = ["dist.strategy=deepspeed", f"dist.deepspeed_config={ds_json}"]
    for stage in ("grpo", "sft"):
        run_stage(stage_cfg(stage, out / f"{stage}-ddp", init, data, *DS_RECIPE[stage], "dist.strategy=ddp"))
        run_stage(stage_cfg(stage, out / f"{stage}-deepspeed", init, data, *DS_RECIPE[stage], *ds, *evals))
    # resume the deepspeed GRPO run from its step-1 checkpoint (a copy of the run folder)
    if rank == 0:
        shutil.copytree(out / "grpo-deepspeed", out / "grpo-deepspeed-resumed")
        shutil.rmtree(out / "grpo-deepspeed-resumed" / "model")
    barrier(DistEnv(rank, 2))
    run_stage(stage_cfg("grpo", out / "grpo-deepspeed-resumed", init, data, *DS_RECIPE["grpo"], *ds), resume=True)


def _worker(rank, world, port, out_dir, single_ckpt, init, data, ds_json):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from tinyvr.utils.distributed import cleanup, gathered, init_distributed, is_deepspeed

    env = init_distributed("deepspeed", ds_json)
    assert env.deepspeed and not env.sharded
    cfg = _cfg()
    _, model, processor, ref = _setup()
    opt, sched = _engine(model, env, cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    out = {"is_deepspeed": is_deepspeed(model) and is_deepspeed(opt),
           "all_partitioned": all(hasattr(p, "ds_id") and p.numel() == 0 for p in trainable),
           "tower_whole": not any(hasattr(p, "ds_id") for p in model.vision_tower.parameters()),
           "local_numel": sum(p.ds_tensor.numel() for p in trainable),
           "full_numel": sum(p.ds_numel for p in trainable),
           "rollout": _greedy(model, processor)}
    out["partitioned_after_rollout"] = model.language_model.model.embed_tokens.weight.numel() == 0
    with torch.no_grad(), gathered(model):  # a forward inside does not re-partition the weights
        model.language_model(input_ids=torch.tensor([[1, 2, 3]]))
        out["held_through_forward"] = all(p.numel() == p.ds_numel for p in trainable)
    # step 1 on batch A, checkpoint written by the deepspeed run
    out["metrics1"] = _step(model, ref, _local(_batch(model, processor, seed=0), rank, world), cfg, env, opt, sched)
    out["params1"] = _full(model)
    ctx = _ctx(env, os.path.join(out_dir, "ds_run"))
    out["ckpt"] = str(_save(ctx, model, processor, opt, sched))
    # a fresh engine resumes from the single-process checkpoint, then step 2 on batch B
    _, model2, _, _ = _setup()
    opt2, sched2 = _engine(model2, env, cfg)
    out["resumed_step"] = _restore(single_ckpt, ctx, model2, opt2, sched2)
    _step(model2, ref, _local(_batch(model2, processor, seed=1), rank, world), cfg, env, opt2, sched2)
    out["params2"] = _full(model2)
    # non-finite gradients: ZeRO-3 skips the step (weights unchanged), the next step trains again
    out["nonfinite_norm"] = _nonfinite_step(model2, processor, opt2, env)
    out["params_after_nonfinite"] = _full(model2)
    out["metrics3"] = _step(model2, ref, _local(_batch(model2, processor, seed=2), rank, world), cfg, env, opt2,
                            sched2)
    out["params3"] = _full(model2)
    if rank == 0:
        torch.save(out, os.path.join(out_dir, "rank0.pt"))
    _recipes(rank, out_dir, init, data, ds_json)
    cleanup(env)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model, tiny_data):
    """The single-process reference steps, then the same steps by two DeepSpeed workers."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("deepspeed")
    ds_json = tmp / "zero3.json"
    ds_json.write_text(json.dumps(ZERO))
    cfg = _cfg()
    initial, single, ckpt, processor, ref = single_process_reference(cfg, tmp)
    mp.start_processes(_worker, args=(WORLD, _free_port(), str(tmp), str(ckpt), str(tiny_model), str(tiny_data),
                                      str(ds_json)),
                       nprocs=WORLD, join=True, start_method="spawn")
    multi = torch.load(tmp / "rank0.pt", weights_only=False)
    return types.SimpleNamespace(initial=initial, single=single, multi=multi, cfg=cfg, processor=processor,
                                 ref=ref, tmp=tmp, tiny_model=tiny_model)


def test_policy_is_partitioned(runs):
    m = runs.multi
    assert m["is_deepspeed"] and m["all_partitioned"]
    assert m["tower_whole"]  # the frozen tower stays a plain module on every rank, as under fsdp
    assert m["local_numel"] <= 0.51 * m["full_numel"]  # each rank holds half of the trainable weights


def test_rollout_under_deepspeed_matches_one_process(runs):
    """Greedy generation inside `gathered` (KV cache, decode steps through ZeRO-3's hooks) gives
    the same tokens; the weights stay gathered through the forwards inside the block (no
    all-gather per layer and decode step) and are partitioned again afterwards."""
    assert torch.equal(runs.multi["rollout"], runs.single["rollout"])
    assert runs.single["rollout"].shape == (8, 8)
    assert runs.multi["partitioned_after_rollout"]
    assert runs.multi["held_through_forward"]


def test_deepspeed_update_matches_one_process(runs):
    s, m = runs.single, runs.multi
    assert s["metrics1"]["grad_norm"] > 5 * runs.cfg.optim.max_grad_norm  # clipping was active
    assert m["metrics1"]["grad_norm"] == pytest.approx(s["metrics1"]["grad_norm"], rel=1e-4)
    moved = _assert_same_update(runs.initial, s["params1"], m["params1"], "step 1")
    assert moved > 50  # connector, every decoder layer, embeddings: the update moved the weights
    assert set(m["params1"]) == set(s["params1"])


def test_nonfinite_gradients_skip_the_step(runs):
    m = runs.multi
    assert not math.isfinite(m["nonfinite_norm"])
    for k, v in m["params2"].items():
        assert torch.equal(m["params_after_nonfinite"][k], v), k
    assert math.isfinite(m["metrics3"]["grad_norm"])
    assert any(not torch.equal(m["params3"][k], v) for k, v in m["params2"].items())


def test_deepspeed_checkpoint_loads_in_one_process(runs, tmp_path):
    """The deepspeed run's checkpoint is a full model folder + the single-process optimizer
    layout: a plain process loads it, has the 1-rank weights, and resumes to the 1-rank step 2."""
    from tinyvr.recipes.common import load_model
    from tinyvr.utils.checkpoint import CheckpointManager
    from tinyvr.utils.distributed import DistEnv

    ckpt = Path(runs.multi["ckpt"])
    single_ckpt = runs.tmp / "single_run" / "checkpoints" / ckpt.name
    names = [sorted(p.name for p in (c / "model").iterdir()) for c in (ckpt, single_ckpt)]
    assert names[0] == names[1]
    assert _weights(ckpt / "model").keys() == _weights(single_ckpt / "model").keys()  # tied LM head written once
    loaded, _ = load_model(ckpt / "model")
    _assert_same_update(runs.initial, runs.single["params1"], dict(loaded.state_dict()), "loaded")
    # optimizer state: same indices, groups and momentum buffers as the single-process optimizer
    state = CheckpointManager.load_state(ckpt)["optimizer"]
    ref_state = runs.single["optim1"]
    assert state["param_groups"] == ref_state["param_groups"]
    assert sorted(state["state"]) == sorted(ref_state["state"]) and len(state["state"]) > 50
    for i, st in ref_state["state"].items():
        assert state["state"][i]["momentum_buffer"].shape == st["momentum_buffer"].shape
        torch.testing.assert_close(state["state"][i]["momentum_buffer"], st["momentum_buffer"], rtol=1e-3,
                                   atol=1e-7)
    # resume in one process from the deepspeed checkpoint: step 2 as in the uninterrupted 1-rank run
    _, model, processor, _ = _setup()
    opt, sched = _trainer(model, runs.cfg)
    assert _restore(ckpt, _ctx(DistEnv(), tmp_path), model, opt, sched) == 1
    _step(model, runs.ref, _batch(model, processor, seed=1), runs.cfg, DistEnv(), opt, sched)
    _assert_same_update(runs.single["params1"], runs.single["params2"], _full(model), "resumed in one process")


def test_deepspeed_resumes_from_a_one_process_checkpoint(runs):
    """Fresh engine (no optimizer state yet) restored from the single-process checkpoint: step 2
    matches, so weights and momentum buffers both reached ZeRO-3's partitions."""
    assert runs.multi["resumed_step"] == 1
    moved = _assert_same_update(runs.single["params1"], runs.single["params2"], runs.multi["params2"],
                                "resumed under deepspeed")
    assert moved > 50


@pytest.mark.parametrize("stage", ["grpo", "sft"])
def test_recipe_under_deepspeed_matches_ddp(runs, stage):
    """The same two ranks, the same data and seeds: the deepspeed recipe (AdamW, warmup + cosine
    schedule) logs the same numbers and ends with the same weights as the ddp one."""
    ddp, ds = runs.tmp / f"{stage}-ddp", runs.tmp / f"{stage}-deepspeed"
    a, b = _metrics(ddp), _metrics(ds)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k, v in ra.items():
            assert rb[k] == pytest.approx(v, rel=1e-4, abs=1e-6), (stage, ra["step"], k)
    assert all(math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in b)
    wa, wb = _weights(ddp / "model"), _weights(ds / "model")
    assert wa.keys() == wb.keys()
    # Equal to fp32 rounding, but for a few elements: with two micro-batches (sft) ZeRO-3 reduces
    # each one and adds the results, ddp adds first and reduces once, and where the sum nearly
    # cancels (|g| near AdamW's eps) that rounding moves the normalised update by up to ~2% of
    # lr = 1e-3. A wrong accumulation would move most elements by ~lr (and change grad_norm above).
    off = total = 0
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=5e-5, msg=lambda m: f"{stage} {k}: {m}")
        off += int(((wb[k] - wa[k]).abs() > 1e-6).sum())
        total += wa[k].numel()
    assert off <= 1e-4 * total, (stage, off, total)
    init = _weights(Path(runs.tiny_model))
    assert any(not torch.equal(wa[k], init[k]) for k in wa)  # training changed the weights
    # the learning rate of the schedule reached ZeRO-3's step: warmup gives step 1 lr 0, so the
    # step-1 checkpoint still has the initial weights (base lr 1e-3 would have moved them)
    ckpt = ds / "checkpoints" / "step_000001"
    assert (ckpt / "DONE").is_file() and (ckpt / "trainer_state.pt").is_file()
    w1 = _weights(ckpt / "model")
    assert w1.keys() == wa.keys()
    for k in w1:
        assert torch.equal(w1[k], init[k]), k
    # AdamW's state in the single-process layout, equal to the ddp run's
    from tinyvr.utils.checkpoint import CheckpointManager

    sa = CheckpointManager.load_state(ddp / "checkpoints" / "step_000001")["optimizer"]
    sb = CheckpointManager.load_state(ckpt)["optimizer"]
    assert sb["param_groups"] == sa["param_groups"]
    assert sorted(sb["state"]) == sorted(sa["state"]) and len(sa["state"]) > 50
    for i, st in sa["state"].items():
        assert sb["state"][i].keys() == st.keys() == {"step", "exp_avg", "exp_avg_sq"}
        assert float(sb["state"][i]["step"]) == float(st["step"]) == 1.0
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(sb["state"][i][key], st[key], rtol=1e-3, atol=1e-9)
    # end-of-stage eval ran on rank 0 from the saved full model
    assert list((ds / "eval").rglob("results.json")), "no end-of-stage eval results"


def test_grpo_resumes_under_deepspeed(runs):
    """Resumed from its step-1 checkpoint (AdamW states created in a fresh engine, then loaded),
    the 2-rank deepspeed GRPO run redoes step 2 exactly as the uninterrupted run did."""
    orig = _metrics(runs.tmp / "grpo-deepspeed")
    resumed = _metrics(runs.tmp / "grpo-deepspeed-resumed")
    assert [r["step"] for r in resumed] == [r["step"] for r in orig] == [1, 2]
    assert resumed[0] == orig[0]
    assert {"reward", "loss", "kl", "completion_length", "entropy", "grad_norm"} <= resumed[1].keys()
    assert resumed[1] == orig[1]  # every logged metric of the step after the checkpoint, bit for bit
    wo = _weights(runs.tmp / "grpo-deepspeed" / "model")
    wr = _weights(runs.tmp / "grpo-deepspeed-resumed" / "model")
    assert wr.keys() == wo.keys()
    for k in wo:
        assert torch.equal(wr[k], wo[k]), k
