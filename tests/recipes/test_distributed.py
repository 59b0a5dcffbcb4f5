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


# ---------------------------------------------------------------------------------------------
# process-group backend and per-rank resume state (one process, no process group)


@pytest.mark.parametrize("cuda, expected", [(False, "gloo"), (True, "cpu:gloo,cuda:nccl")])
def test_backend_keeps_cpu_collectives_on_gloo(monkeypatch, cuda, expected):
    """On CUDA the group maps CPU tensors to gloo: NCCL alone rejects the CPU tensors of
    reduce_metrics / all_ranks / the checkpoint's per-rank gather."""
    import tinyvr.utils.distributed as d

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert d.pick_backend() == expected
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(d.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(d.dist, "init_process_group", lambda backend: calls.append(backend))
    monkeypatch.setattr(d.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(d.dist, "get_world_size", lambda: 2)
    env = d.init_distributed()
    assert calls == [expected] and (env.rank, env.world_size, env.local_rank) == (1, 2, 1)


def _tiny_trainer():
    from tinyvr.config import load_config
    from tinyvr.recipes.common import build_scheduler

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, opt, build_scheduler(opt, load_config(None, ["stage=grpo"]), 10)


def _rank_ctx(rank, world, run_dir, seed=0):
    import types

    from tinyvr.utils.checkpoint import CheckpointManager
    from tinyvr.utils.distributed import DistEnv

    return types.SimpleNamespace(dist=DistEnv(rank, world), is_main=rank == 0, ckpt=CheckpointManager(run_dir),
                                 generator=torch.Generator().manual_seed(seed + 1000 * rank))


def _write_ckpt(run_dir, world, cursors, legacy=False):
    """A checkpoint as `world` ranks write it (rank r at data cursor cursors[r], its generator
    advanced r + 1 draws); legacy: the layout from before per-rank states (no world_size, no files)."""
    from safetensors.torch import save_file

    from tinyvr.data.datasets import BadSampleTracker
    from tinyvr.recipes.common import DataOrder
    from tinyvr.recipes.resume import rank_state, training_state

    model, opt, sched = _tiny_trainer()
    states, draws = [], []
    for r in range(world):
        ctx = _rank_ctx(r, world, run_dir)
        torch.rand(r + 1, generator=ctx.generator)
        order = DataOrder(8, 0, r, world)
        order.cursor = cursors[r]
        tracker = BadSampleTracker(0.5)
        tracker.num_bad = r
        states.append(rank_state(order, tracker, ctx))
        draws.append(torch.rand(4, generator=ctx.generator.clone_state()))  # what the rank samples next
        if r == 0:
            main = training_state(5, opt, sched, order, tracker, ctx)

    def save_model(folder):
        folder.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))

    if legacy:
        main.pop("world_size")
    ckpt = _rank_ctx(0, world, run_dir).ckpt.save(5, save_model, main, rank_states=None if legacy else states)
    return ckpt, draws


def _resume(ckpt, rank, world, tmp_path):
    from tinyvr.data.datasets import BadSampleTracker
    from tinyvr.recipes.common import DataOrder
    from tinyvr.recipes.resume import restore_training

    model, opt, sched = _tiny_trainer()
    ctx = _rank_ctx(rank, world, tmp_path / f"resume{rank}", seed=99)
    order, tracker = DataOrder(8, 0, rank, world), BadSampleTracker(0.5)
    assert restore_training(ckpt, model, opt, sched, order, tracker, ctx) == 5
    return order.cursor, tracker.num_bad, torch.rand(4, generator=ctx.generator)


def test_each_rank_resumes_its_own_rng_and_data_position(tmp_path):
    ckpt, draws = _write_ckpt(tmp_path / "run", 2, cursors=[3, 4])
    assert sorted(p.name for p in ckpt.glob("rng_rank*.pt")) == ["rng_rank0.pt", "rng_rank1.pt"]
    for r in range(2):
        cursor, bad, sample = _resume(ckpt, r, 2, tmp_path)
        assert (cursor, bad) == ([3, 4][r], r)
        assert torch.equal(sample, draws[r])  # rank r's own generator, not rank 0's
    assert not torch.equal(draws[0], draws[1])


def test_resume_with_another_world_size_derives_rank_states(tmp_path, capsys):
    """1 -> 2 ranks and 2 -> 1 rank resume with a warning: no sample taken twice, distinct and
    reproducible generators per rank."""
    one, _ = _write_ckpt(tmp_path / "one", 1, cursors=[5])
    a = [_resume(one, r, 2, tmp_path) for r in range(2)]
    assert "resume is not bit-exact" in capsys.readouterr().out
    assert [c for c, _, _ in a] == [3, 3]  # 5 samples taken by one process: the 2 ranks go on at 6, 7
    assert not torch.equal(a[0][2], a[1][2])
    assert all(torch.equal(x[2], y[2]) for x, y in zip(a, [_resume(one, r, 2, tmp_path) for r in range(2)]))
    two, _ = _write_ckpt(tmp_path / "two", 2, cursors=[3, 3])
    cursor, _, _ = _resume(two, 0, 1, tmp_path)
    assert cursor == 6 and "resume is not bit-exact" in capsys.readouterr().out


def test_legacy_single_process_checkpoint_resumes_exactly(tmp_path, capsys):
    """A checkpoint written before per-rank states (no world_size, no rng_rank files) still
    restores its own RNG state and cursor in one process, without a warning."""
    ckpt, draws = _write_ckpt(tmp_path / "run", 1, cursors=[5], legacy=True)
    assert not list(ckpt.glob("rng_rank*.pt"))
    cursor, _, sample = _resume(ckpt, 0, 1, tmp_path)
    assert cursor == 5 and torch.equal(sample, draws[0])
    assert "not bit-exact" not in capsys.readouterr().out
