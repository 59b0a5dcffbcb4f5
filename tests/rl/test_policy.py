"""`completion_logprobs` with a shared prompt (group_size=G) against the plain [R, prompt+completion]
forward, for video and text-only rows; and a text-only `grpo_update`."""

from __future__ import annotations

import copy

import pytest
import torch

from tinyvr.rl.policy import completion_logprobs

G = 3
QUESTIONS = ["Which direction does the red circle move?",
             "How many shapes are in the video? Options: A. 1 B. 2 C. 3 D. 4"]


@pytest.fixture(scope="module")
def setup():
    from tinyvr.recipes.common import new_model

    model, processor = new_model("tiny", seed=0)
    model = model.float().train()
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    c_ids = torch.randint(1, cfg.text_config.vocab_size, (len(QUESTIONS) * G, 7), generator=g)
    c_mask = torch.ones_like(c_ids)
    c_mask[1, 4:] = 0  # stopped early
    c_mask[4, 1:] = 0  # EOS first
    feats = torch.randn(len(QUESTIONS), cfg.num_frames * cfg.patches_per_frame, cfg.vision_config.hidden_size,
                        generator=g)
    return model, processor, c_ids, c_mask, feats


def _prompts(setup, video):
    model, processor, *_ = setup
    prompts = [processor.encode_prompt(q) for q in QUESTIONS]
    if not video:
        prompts = [[t for t in p if t != model.config.image_token_index] for p in prompts]
    assert len({len(p) for p in prompts}) > 1  # left padding
    batch = processor.collate([{"input_ids": p} for p in prompts], padding_side="left")
    return batch["input_ids"].repeat_interleave(G, 0), batch["attention_mask"].repeat_interleave(G, 0)


def _run(setup, video, group_size, lc=None):
    model, _, c_ids, c_mask, feats = setup
    c_ids, c_mask = c_ids[:, :lc], c_mask[:, :lc]
    p_ids, p_mask = _prompts(setup, video)
    model.zero_grad(set_to_none=True)
    embeds = model.connector(feats).repeat_interleave(G, 0) if video else None
    logp, ent = completion_logprobs(model, p_ids, p_mask, embeds, c_ids, c_mask, with_entropy=True,
                                    group_size=group_size)
    (logp * c_mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), ent, grads


@pytest.mark.parametrize("video", [True, False])
def test_shared_prompt_equals_full_forward(setup, video):
    logp, ent, grads = _run(setup, video, 1)
    logp_s, ent_s, grads_s = _run(setup, video, G)
    assert logp_s.shape == logp.shape
    torch.testing.assert_close(logp_s, logp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent_s, ent, atol=1e-5, rtol=1e-5)
    assert grads_s.keys() == grads.keys()
    assert ("connector" in " ".join(grads)) == video  # the video path gets its gradient
    for k in grads:
        torch.testing.assert_close(grads_s[k], grads[k], atol=1e-5, rtol=1e-4)


def test_shared_prompt_one_completion_token(setup):
    logp, ent, _ = _run(setup, True, 1, lc=1)
    logp_s, ent_s, _ = _run(setup, True, G, lc=1)
    torch.testing.assert_close(logp_s, logp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent_s, ent, atol=1e-5, rtol=1e-5)


def test_rows_that_are_not_groups_take_the_full_forward(setup):
    """Rows of a 'group' with different prompts (or activation checkpointing) -> the plain forward."""
    from tinyvr.rl import policy

    model, _, c_ids, c_mask, _ = setup
    p_ids, p_mask = _prompts(setup, False)
    assert policy._can_share_prompt(model, p_ids, p_mask, G)
    assert not policy._can_share_prompt(model, p_ids, p_mask, 2)  # groups of 2 mix the two prompts
    assert not policy._can_share_prompt(model, p_ids, p_mask, 4)  # 6 rows are not groups of 4
    right = p_mask.flip(1)  # right padding
    assert not policy._can_share_prompt(model, p_ids.flip(1), right, G)
    ckpt = copy.deepcopy(model)
    enable = getattr(ckpt, "activation_checkpointing_enable", None) or ckpt.gradient_checkpointing_enable
    enable()
    assert not policy._can_share_prompt(ckpt, p_ids, p_mask, G)
    with torch.no_grad():
        a, _ = completion_logprobs(model, p_ids, p_mask, None, c_ids, c_mask, group_size=2)
        b, _ = completion_logprobs(model, p_ids, p_mask, None, c_ids, c_mask)
    assert torch.equal(a, b)


def test_text_only_grpo_update(setup):
    """feats=None: text-only prompts through reference, policy, loss and optimizer step."""
    from types import SimpleNamespace

    from tinyvr.config import load_config
    from tinyvr.recipes.common import Timer, build_optimizer, build_scheduler
    from tinyvr.recipes.grpo import grpo_update
    from tinyvr.utils.distributed import DistEnv

    model0, _, c_ids, c_mask, _ = setup
    model = copy.deepcopy(model0)
    ref = copy.deepcopy(model0).eval().requires_grad_(False)
    cfg = load_config(None, ["stage=grpo", f"rollout.num_generations={G}", "optim.lr=1e-2", "rl.beta=0.04"])
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, 10)
    p_ids, p_mask = _prompts(setup, False)
    adv = torch.linspace(-1, 1, c_ids.shape[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = grpo_update(model, ref, (None, p_ids, p_mask, c_ids), adv, c_mask, cfg, opt, sched,
                          SimpleNamespace(dist=DistEnv()), Timer())
    assert torch.isfinite(torch.tensor(metrics["loss"])) and "kl" in metrics
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"language_model"}  # no video: the connector gets no gradient
