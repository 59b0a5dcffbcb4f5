"""The tiny foundation: the two skills the real recipe gets from SigLIP and Qwen2.5, built once.

    tinyvr foundation --config configs/tiny/foundation.yaml --out runs/foundation [--part all|vision|language|align]

The YAML file is the recipe (FoundationConfig's fields; flags that are given win over it).

The 3.6B recipe starts from a pretrained tower and LLM. A tiny model trained from scratch by the
demo's own stages learns the answer format but neither looks at the frames nor finds the option
that matches what it saw (docs/tiny-study.md, items 4-9). This recipe pretrains both, on the
synthetic generator only (its own rng stream, split "foundation": no clip or question of the demo's
splits is used):

1. **tokenizer and fresh tiny model**, from the text of the foundation's items;
2. **vision**: the tower alone, a dense per-patch objective from the scene's ground truth: every
   kept patch of 8 uniformly sampled frames is labelled with the colour and the shape of the
   object covering most of it, else background (two linear heads, dropped afterwards);
3. **language**: the LLM alone, half variable-period induction (random prefix, then a random token
   sequence twice: the in-context copy circuit that small transformers form after a plateau) and
   half multiple-choice binding in the dataset's prompt format, the right option's text stated once
   ("Which option is X?" or a hint line), then its letter;
4. **align**: the connector and the LLM (tower frozen) on the items' own clips, each with either
   its caption, cut so that short, fully visual targets (which objects, which colours) are
   frequent, or up to six grounded questions (`data/synthetic/grounding.py`: the colour or place of
   one named object at the first or last frame, several look-ups per clip), mixed half and half
   with the language part's examples so the look-up skill survives. Long captions alone teach the
   text prior first: after the demo's 63 caption steps the loss with the right clip and with
   another clip is the same.
   `align_cycles` runs this part more than once, the LLM carried on, each cycle with its own
   connector warm-up, object head, learning-rate schedule and draws, and (by default) the connector
   as initialised.
   Writes `<out>/model`, an HF-style model folder the demo's stages start from, and
   `<out>/foundation.json` (settings, final metrics, sha256 of the weights).

The vision and language parts touch disjoint weights, so they can run as two processes side by
side (`--part vision` and `--part language`), then `--part align`. Every part writes a checkpoint
every `save_every` steps and resumes from it when re-run.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tinyvr.data.synthetic.grounding import (MOTION_KIND, OBJECT_KINDS, grounded_conversation, grounded_questions,
                                              object_facts, with_options)
from tinyvr.data.synthetic.writer import format_problem
from tinyvr.data.template import (ANSWER_SEP, ASSISTANT, OPTION_SUFFIX, REASON_SUFFIX, USER, checked_thinking,
                                  grpo_question, reasoned_answer)
from tinyvr.errors import ConfigError
from tinyvr.utils.hashing import file_sha256
from tinyvr.utils.logging import banner, info

SPLIT = "foundation"  # the generator's rng stream for foundation items (disjoint from the demo's)
LETTERS = "ABCDE"
PARTS = ("all", "vision", "language", "align")
_COMMON = ("seed", "items", "model_overrides", "threads", "tokenizer_from")
_LANGUAGE_MIX = ("induction_fraction", "binding_formats")  # the language part's, replayed during align
PART_SETTINGS = {  # the FoundationConfig fields each part trains with (recorded next to its metrics)
    "vision": _COMMON + ("vision_steps", "vision_lr", "vision_batch", "vision_init", "vision_position_weight"),
    "language": _COMMON + _LANGUAGE_MIX + ("language_steps", "language_lr", "language_batch", "language_init"),
    "align": _COMMON + _LANGUAGE_MIX + ("align_steps", "align_lr", "align_batch", "align_induction_fraction",
                                        "align_grounded_fraction",
                                        "align_choice_fraction", "align_reason_fraction", "align_question_fraction",
                                        "align_question_reason_fraction", "align_question_option_fraction",
                                        "align_later_question_option_fraction", "align_question_trace",
                                        "align_object_weight", "align_object_warmup",
                                        "align_cycles", "align_cycle_connector", "align_grounded_motion",
                                        "align_grounded_compare"),
}


@dataclass
class FoundationConfig:
    seed: int = 0
    # overrides of the tiny preset (build_config keys), e.g. {"text_config": {"num_attention_heads": 8}}
    model_overrides: dict = field(default_factory=dict)
    items: int = 2000  # generated items: tokenizer text, binding questions, vision clips
    vision_steps: int = 1200
    vision_lr: float = 2e-3
    vision_batch: int = 16
    # weight of a third per-patch objective: the patch's row and column in the frame. Colour and shape
    # need no position, so without it the tower's features lose where a patch is, and no question about
    # place or motion can be answered from them (docs/tiny-study.md, item 35)
    vision_position_weight: float = 1.0
    language_steps: int = 6000
    language_lr: float = 1e-3
    language_batch: int = 32
    induction_fraction: float = 0.5
    # weights of an earlier build to continue from instead of the fresh ones: a part's own file
    # (language/lm.safetensors, vision/tower.safetensors) or a whole foundation's model/model.safetensors;
    # the part then trains its `*_steps` more steps with its own schedule (0: take the weights as they are)
    language_init: str = ""
    vision_init: str = ""
    binding_formats: tuple[str, ...] = ("which", "hint")  # see binding_example
    align_steps: int = 600
    align_lr: float = 1e-3
    align_batch: int = 16  # clips per step, plus as many language examples
    # induction share of those language examples; None: induction_fraction. Once induction has formed
    # the replay can spend its examples on the look-up instead
    align_induction_fraction: float | None = None
    align_grounded_fraction: float = 0.5  # clips that get grounded questions instead of a caption
    align_choice_fraction: float = 0.5  # grounded questions asked as multiple choice (answer: the letter)
    align_reason_fraction: float = 0.0  # of those, asked in reason mode (answer stated, option check, letter)
    # grounded clips that also get their item's own question (any family), asked openly: the answer's text
    align_question_fraction: float = 0.0
    # of those own questions, the share asked as the evaluation asks it in reason mode (the item's options
    # and the reasoning instruction), answered with the stated answer, the option check and the letter
    align_question_reason_fraction: float = 0.0
    # and the share asked as the evaluation asks it in option mode (the item's options and the option
    # instruction), answered with the letter alone: the one-step look-up after an answer read from the
    # video, on the dataset's own questions (the two shares together at most 1; the rest open)
    align_question_option_fraction: float = 0.0
    # that share from the second align cycle on (None: the same in every cycle). Asked in the second
    # cycle only, where the one-letter answer from the video forms, they gave the best reason mode
    # after SFT (43% held-out on a validation set against 34-36 without; item 39)
    align_later_question_option_fraction: float | None = None
    # those reason-form answers think with the item's whole trace (what the frames show, then the
    # stated answer and the check) instead of the stated answer alone: the cold start's format
    align_question_trace: bool = False
    # grounded questions also ask which way each object went between the first and the last sampled
    # frame (`grounding.motion_questions`): the reading of the dataset's questions, not the letter
    # look-up, bounds reason and option mode (item 38), and direction, order and compare need two
    # frames compared, which the one-frame colour and place questions never ask
    align_grounded_motion: bool = False
    # and which of the clip's objects appears first and which moves farther (`compare_questions`,
    # asked only where the answer is clear): the order and compare families, read worst (item 38)
    align_grounded_compare: bool = False
    # weight of an object objective on the connector's output during align: a small head, the object's
    # shape as its query over one frame's latents, names the object's region (nine) and colour. The
    # align text alone never makes the connector keep place, even from a tower that has it; place
    # alone pushes colour out (item 35). The head is dropped afterwards. Off by default until a demo
    # from a build with it is measured: at 1.0 place answers rise, the reason-form answers fall (item 35)
    align_object_weight: float = 0.0
    # steps of the connector and the object head alone (tower and LLM untouched) before the joint align
    # steps: the connector learns to keep each object's place and colour first, so the LLM reads a
    # connector that no longer changes under it (at weight 1 from a random connector the reason-form
    # answers fell, item 35)
    align_object_warmup: int = 0
    # the align part run this many times over, each cycle as the first (its own warm-up, head, learning-rate
    # schedule and draws), the LLM carried on. A second cycle, with the connector fresh or kept, formed the
    # one-letter answer from the video where one cycle of twice the steps had not (docs/tiny-study.md, item 38)
    align_cycles: int = 1
    align_cycle_connector: str = "fresh"  # each later cycle's connector: "fresh" (as initialised) or "keep"
    # tokenizer of an earlier build's folder (init/ or model/) instead of one trained on the items' text:
    # its weights can then be continued after the generator's text changed
    tokenizer_from: str = ""
    save_every: int = 500
    eval_every: int = 100  # the vision and align parts' held-out checks (they do not change the training)
    threads: int = 0  # torch threads; 0 = all cores

    def check(self) -> None:
        for name in ("items", "vision_steps", "vision_batch", "language_steps", "language_batch", "align_steps",
                     "align_batch", "save_every", "eval_every", "align_object_warmup", "align_cycles"):
            if getattr(self, name) < 0 or (name.endswith(("batch", "eval_every", "cycles")) and getattr(self, name) == 0):
                raise ConfigError(f"foundation.{name} must be positive, got {getattr(self, name)}")
        bad = [f for f in self.binding_formats if f not in BINDING_FORMATS]
        if bad or not self.binding_formats:
            raise ConfigError(f"foundation.binding_formats must be a non-empty subset of {list(BINDING_FORMATS)}, "
                              f"got {list(self.binding_formats)}")
        if self.align_induction_fraction is not None and not 0.0 <= self.align_induction_fraction <= 1.0:
            raise ConfigError(f"foundation.align_induction_fraction must be in [0, 1], "
                              f"got {self.align_induction_fraction}")
        for name in ("induction_fraction", "align_grounded_fraction", "align_choice_fraction",
                     "align_reason_fraction", "align_question_fraction", "align_question_reason_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"foundation.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.align_cycle_connector not in ("fresh", "keep"):
            raise ConfigError(f"foundation.align_cycle_connector must be 'fresh' or 'keep', "
                              f"got {self.align_cycle_connector!r}")
        if self.align_object_weight < 0:
            raise ConfigError(f"foundation.align_object_weight must be >= 0, got {self.align_object_weight}")
        if self.vision_position_weight < 0:
            raise ConfigError(f"foundation.vision_position_weight must be >= 0, got {self.vision_position_weight}")
        for name in ("align_question_option_fraction", "align_later_question_option_fraction"):
            of = getattr(self, name)
            if of is not None and not 0.0 <= of <= 1.0:
                raise ConfigError(f"foundation.{name} must be in [0, 1], got {of}")
            if of is not None and self.align_question_reason_fraction + of > 1.0:
                raise ConfigError(f"foundation.align_question_reason_fraction + {name} must be "
                                  f"at most 1, got {self.align_question_reason_fraction} + {of}")
        if not isinstance(self.model_overrides, dict):
            raise ConfigError(f"foundation.model_overrides must be a dict, got {type(self.model_overrides).__name__}")
        for name in ("language_init", "vision_init"):
            if getattr(self, name) and not Path(getattr(self, name)).is_file():
                raise ConfigError(f"foundation.{name}: no file {getattr(self, name)}")
        if self.tokenizer_from and not (Path(self.tokenizer_from) / "tokenizer.json").is_file():
            raise ConfigError(f"foundation.tokenizer_from: no tokenizer.json in {self.tokenizer_from}")
        if self.items < 16:
            raise ConfigError(f"foundation.items must be at least 16, got {self.items}")


def foundation_config(data: dict, where: str = "foundation") -> FoundationConfig:
    """A checked FoundationConfig from a mapping (a recipe YAML, flags merged over it): unknown keys,
    wrong types and out-of-range values are refused, naming `where` and the field."""
    from tinyvr.config import from_dict

    data = dict(data)
    formats = data.get("binding_formats")
    if isinstance(formats, str):  # the flag's comma list
        data["binding_formats"] = [f.strip() for f in formats.split(",") if f.strip()]
    if "binding_formats" in data and not (isinstance(data["binding_formats"], list)
                                          and all(isinstance(f, str) for f in data["binding_formats"])):
        raise ConfigError(f"{where}: binding_formats must be a list of names, got {data['binding_formats']!r}")
    try:
        cfg = from_dict(FoundationConfig, data)
        if "binding_formats" in data:
            cfg.binding_formats = tuple(cfg.binding_formats)
        cfg.check()
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return cfg


# ---------------------------------------------------------------------------------------------
# items


def foundation_items(seed: int, n: int) -> list[tuple[dict, object]]:
    """`n` generator items of the foundation's own split: (record, candidate scene)."""
    from tinyvr.data.synthetic.writer import generate_item

    return [generate_item(seed, SPLIT, i) for i in range(n)]


def corpus_of(records: list[dict]) -> list[str]:
    """Tokenizer text: prompts with options, captions and reasoning, as the demo's corpus has."""

    texts = []
    for r in records:
        texts += [format_problem(r["question"], r["options"]) + "\n" + OPTION_SUFFIX, r["caption"], r["reasoning"]]
    return texts


# ---------------------------------------------------------------------------------------------
# vision: dense per-patch colour and shape


def patch_labels(cand, frame_ids, patch: int, *, min_share: float = 1 / 8) -> tuple[np.ndarray, np.ndarray]:
    """int64 [T, P] colour and shape class per patch (0 = background, else 1 + index in
    COLOURS / SHAPES): the object covering most of the patch, if it covers at least `min_share`."""
    from tinyvr.data.synthetic.scene import COLOURS, SHAPES

    view, scene = cand.view, cand.scene
    g = scene.frame_size // patch
    col = np.zeros((len(frame_ids), g * g), dtype=np.int64)
    shp = np.zeros_like(col)
    n_obj = len(scene.objects)
    for k, t in enumerate(frame_ids):
        lab = view.labels(int(t)).astype(np.int64)  # [S, S], -1 background
        blocks = lab.reshape(g, patch, g, patch).transpose(0, 2, 1, 3).reshape(g * g, patch * patch)
        counts = np.stack([(blocks == i).sum(1) for i in range(n_obj)], 1)  # [P, n_obj]
        best = counts.argmax(1)
        ok = counts.max(1) >= min_share * patch * patch
        for p in np.nonzero(ok)[0]:
            i = int(best[p])
            col[k, p] = 1 + COLOURS.index(cand.track.colour[int(t)][i])
            shp[k, p] = 1 + SHAPES.index(scene.objects[i].shape)
    return col, shp


def clip_frames(cand, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The scene's frames the model sees (the reference's uniform sampling, rendered in memory, no
    mp4): uint8 [T, S, S, 3] and the frame indices."""
    from tinyvr.data.synthetic.scene import sample_indices

    ids = sample_indices(cand.scene.num_frames, num_frames)
    return np.stack([cand.view.frame(int(t)) for t in ids]), ids


def clip_pixels(cand, processor) -> tuple[torch.Tensor, np.ndarray]:
    """Pixel values [T, 3, S, S] of `clip_frames` and the frame indices."""
    frames, ids = clip_frames(cand, processor.num_frames)
    return processor.frames_to_pixel_values(frames), ids


def patch_grid(side: int, num_frames: int, drop_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of every kept patch in its frame, frames one after another (the order of
    `vision_features`): two int64 [num_frames * P'] tensors, the same for every clip."""
    grid = torch.arange(side * side)[1 if drop_first else 0:]
    return (grid // side).repeat(num_frames), (grid % side).repeat(num_frames)


def vision_data(items, processor, patch: int, drop_first: bool):
    """uint8 frames [N, T, S, S, 3] (a quarter of the pixel values' memory; converted per batch by
    `processor.frames_to_pixel_values`) and per-kept-patch labels [N, T*P'] of the items' scenes."""
    X, C, S = [], [], []
    for _, cand in items:
        frames, ids = clip_frames(cand, processor.num_frames)
        col, shp = patch_labels(cand, ids, patch)
        if drop_first:  # the "patch" select strategy drops token 0 of every frame
            col, shp = col[:, 1:], shp[:, 1:]
        X.append(frames)
        C.append(torch.from_numpy(col.reshape(-1)))
        S.append(torch.from_numpy(shp.reshape(-1)))
    return np.stack(X), torch.stack(C), torch.stack(S)


def train_vision(model, processor, items, cfg: FoundationConfig, out: Path) -> dict:
    from tinyvr.data.synthetic.scene import COLOURS, SHAPES

    vc = model.config.vision_config
    X, C, S = vision_data(items, processor, vc.patch_size, model.config.vision_feature_select_strategy == "patch")

    def pixels(idx) -> torch.Tensor:
        return torch.stack([processor.frames_to_pixel_values(X[i]) for i in idx])

    n_va = max(1, len(X) // 10)  # held-out clips for the printed accuracy
    tower = model.vision_tower.train()
    tower.requires_grad_(True)
    g = torch.Generator().manual_seed(cfg.seed)
    side = vc.image_size // vc.patch_size
    heads = torch.nn.ModuleDict({"colour": torch.nn.Linear(vc.hidden_size, 1 + len(COLOURS)),
                                 "shape": torch.nn.Linear(vc.hidden_size, 1 + len(SHAPES)),
                                 "row": torch.nn.Linear(vc.hidden_size, side),
                                 "col": torch.nn.Linear(vc.hidden_size, side)})
    rows, cols = patch_grid(side, processor.num_frames, model.config.vision_feature_select_strategy == "patch")
    params = list(tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.vision_lr, weight_decay=0.01)
    warm = max(1, cfg.vision_steps // 20)  # 5% warm-up, then cosine to 0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, 0.5 * (
        1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, cfg.vision_steps - warm))))))
    # background is ~87% of the patches: down-weight it so the objects drive the loss
    w_col = torch.ones(1 + len(COLOURS)); w_col[0] = 0.2
    w_shp = torch.ones(1 + len(SHAPES)); w_shp[0] = 0.2
    ckpt, start = out / "vision" / "checkpoint.pt", 0
    if ckpt.is_file():
        st = torch.load(ckpt, weights_only=True)
        tower.load_state_dict(st["tower"]); heads.load_state_dict(st["heads"])
        opt.load_state_dict(st["opt"]); sched.load_state_dict(st["sched"]); g.set_state(st["gen"])
        start = st["step"]
        info(f"vision: resumed at step {start}")

    def evaluate() -> dict:
        with torch.no_grad():
            f = torch.cat([model.vision_features(pixels(range(i, min(i + 32, n_va)))) for i in range(0, n_va, 32)])
            pc, ps = heads["colour"](f).argmax(-1), heads["shape"](f).argmax(-1)
            where = (heads["row"](f).argmax(-1) == rows) & (heads["col"](f).argmax(-1) == cols)
        obj = C[:n_va] > 0
        return {"colour_acc": round((pc[obj] == C[:n_va][obj]).float().mean().item(), 4),
                "shape_acc": round((ps[obj] == S[:n_va][obj]).float().mean().item(), 4),
                "background_acc": round((pc[~obj] == 0).float().mean().item(), 4),
                "position_acc": round(where.float().mean().item(), 4)}

    t0, loss = time.time(), float("nan")
    for step in range(start, cfg.vision_steps):
        idx = n_va + torch.randint(len(X) - n_va, (cfg.vision_batch,), generator=g)
        f = model.vision_features(pixels(idx.tolist()))
        loss = (F.cross_entropy(heads["colour"](f).flatten(0, 1), C[idx].flatten(), weight=w_col)
                + F.cross_entropy(heads["shape"](f).flatten(0, 1), S[idx].flatten(), weight=w_shp))
        if cfg.vision_position_weight:
            n = f.shape[0]
            loss = loss + cfg.vision_position_weight * (
                F.cross_entropy(heads["row"](f).flatten(0, 1), rows.repeat(n))
                + F.cross_entropy(heads["col"](f).flatten(0, 1), cols.repeat(n)))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.vision_steps:
            info(f"vision step {step + 1}/{cfg.vision_steps} loss {loss.item():.3f} held-out {evaluate()} "
                 f"{time.time() - t0:.0f}s")
        elif (step + 1) % PROGRESS_EVERY == 0:
            _progress("vision", step + 1 - start, step + 1, cfg.vision_steps, loss, t0)
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.vision_steps:
            _save_checkpoint(ckpt, {"tower": tower.state_dict(), "heads": heads.state_dict(), "opt": opt.state_dict(),
                                    "sched": sched.state_dict(), "gen": g.get_state(), "step": step + 1})
    metrics = {**evaluate(), "loss": _last(loss), "steps": cfg.vision_steps}
    tower.requires_grad_(False)
    return metrics


# ---------------------------------------------------------------------------------------------
# language: induction + multiple-choice binding


BINDING_FORMATS = ("which", "hint", "tail", "pool", "enum")


def binding_example(rng: random.Random, record: dict, tokenizer,
                    formats: tuple[str, ...] = ("which", "hint"), pool: list[str] | None = None) -> tuple[list[int], int]:
    """A real question with its real options (shuffled), one option's text stated, then its letter,
    in the SFT turn's shape ("USER: ... ASSISTANT: B", the system line left out to save compute) so
    the skill lands on the very tokens SFT supervises. Returns the ids and the index of the letter
    (the only target). Where the option is stated: "which": "Which option is X?" before the options;
    "hint": the question, then "Hint: X."; "tail": the answer starts "The answer is X, option" right
    before the letter, as the answer's content sits at the answer position when it comes from the
    video. "pool": as "which", but five option texts drawn from `pool` (every option text of the
    items), so they rarely share words: the easy end of a curriculum (real option sets such as five
    directions differ in one word of three). "enum": reason mode, the thinking opens with the answer
    stated (context, not a target) and the targets are the option check, `</think>` and the letter in
    `<answer>` tags (half of the option sets from `pool`): the look-up as a chain of copies."""
    fmt = formats[int(rng.random() * len(formats))]
    if fmt == "pool" or (fmt == "enum" and pool and rng.random() < 0.5):
        if not pool or len(pool) < len(LETTERS):
            raise ConfigError(f"binding format 'pool' needs at least {len(LETTERS)} distinct option texts")
        opts = rng.sample(pool, len(LETTERS))
    else:
        opts = list(record["options"])
        rng.shuffle(opts)
    k = rng.randrange(len(opts))
    lines = "\n".join(f"{LETTERS[i]}. {t}" for i, t in enumerate(opts))
    if fmt == "enum":  # reason mode: the answer stated in the thinking (given), then the check is the target
        text = (f"{USER}{record['question']}\nOptions:\n{lines}\n{REASON_SUFFIX} {ASSISTANT}{ANSWER_SEP}"
                + reasoned_answer(checked_thinking(opts, k), LETTERS[k]))
        context = tokenizer(text[:text.index("\n", text.index("<think>")) + 1])["input_ids"]  # to the stated answer
        ids = tokenizer(text)["input_ids"]
        if ids[:len(context)] != context:  # pragma: no cover - the tags and newline are whole tokens
            raise RuntimeError("enum binding example: the thinking's prefix does not tokenize on its own")
        return ids, len(context)
    if fmt in ("which", "pool"):
        human, lead = f"Which option is {opts[k]}?\nOptions:\n{lines}\n{OPTION_SUFFIX}", ""
    elif fmt == "hint":
        human, lead = f"{record['question']} Hint: {opts[k]}.\nOptions:\n{lines}\n{OPTION_SUFFIX}", ""
    else:
        human, lead = f"{record['question']}\nOptions:\n{lines}\n{OPTION_SUFFIX}", f"The answer is {opts[k]}, option "
    ids = tokenizer(f"{USER}{human} {ASSISTANT}{ANSWER_SEP}{lead}{LETTERS[k]}")["input_ids"]
    return ids, len(ids) - 1  # the letter is one token (the tiny tokenizer cuts the space off it)


def induction_example(rng: random.Random, vocab: int, low: int = 40) -> tuple[list[int], int]:
    """Random prefix, then a random sequence of 6-30 tokens twice; targets: the second copy after
    its first token (the first token of the repeat cannot be predicted)."""
    prefix = [rng.randrange(low, vocab) for _ in range(rng.randint(0, 20))]
    seq = [rng.randrange(low, vocab) for _ in range(rng.randint(6, 30))]
    return prefix + seq + seq, len(prefix) + len(seq) + 1


def option_pool(records) -> list[str]:
    """Every distinct option text of the records (the `pool` binding format draws from it)."""
    return sorted({o for r in records for o in r["options"]})


def language_batch(rng: random.Random, records, tokenizer, size: int, induction_fraction: float,
                   formats: tuple[str, ...] = ("which", "hint"), pool: list[str] | None = None) -> dict:
    """Right-padded batch of induction and binding examples; labels only on their targets. Training
    loops pass `pool` (`option_pool(records)`) once instead of rebuilding it every batch."""
    if pool is None and "pool" in formats:
        pool = option_pool(records)
    examples = []
    for _ in range(size):
        if rng.random() < induction_fraction:
            examples.append((*induction_example(rng, len(tokenizer)), "induction"))
        else:
            ids, a = binding_example(rng, rng.choice(records), tokenizer, formats, pool)
            examples.append((ids, a, "binding" if len(ids) - a == 1 else "enum"))
    B, L = len(examples), max(len(e[0]) for e in examples)
    ids = torch.zeros(B, L, dtype=torch.long)
    att = torch.zeros(B, L, dtype=torch.long)
    lab = torch.full((B, L), -100, dtype=torch.long)
    for i, (s, a, _) in enumerate(examples):
        ids[i, :len(s)] = torch.tensor(s)
        att[i, :len(s)] = 1
        lab[i, a:len(s)] = ids[i, a:len(s)]
    return {"input_ids": ids, "attention_mask": att, "labels": lab,
            "kinds": [e[2] for e in examples], "spans": [(e[1], len(e[0])) for e in examples]}


def length_groups(batch: dict, groups: int) -> list[dict]:
    """The batch's rows sorted by length and cut into up to `groups` slices, the token tensors of each
    trimmed to its own longest row (other tensors and lists: the slice's rows). A padded position
    costs as much compute as a token, and the rows differ a lot: induction rows are about half as
    long as look-ups, a caption a fifth of six grounded questions; one padded batch is ~half padding."""
    lengths = batch["attention_mask"].sum(1)
    order = sorted(range(len(lengths)), key=lambda i: (int(lengths[i]), i))
    size = -(-len(order) // max(1, groups))
    out = []
    for k in range(0, len(order), size):
        rows = order[k:k + size]
        width = int(lengths[rows].max())
        part = {}
        for key, v in batch.items():
            if key in ("input_ids", "attention_mask", "labels"):
                part[key] = v[rows, :width]
            else:
                part[key] = v[rows] if isinstance(v, torch.Tensor) else [v[i] for i in rows]
        out.append(part)
    return out


LENGTH_GROUPS = 4  # slices per batch: about half the positions of one padded batch (benchmarks/foundation_step.py)


def sliced_backward(model, batch: dict, hist: dict | None = None, groups: int = LENGTH_GROUPS) -> float:
    """Backward of the batch's mean token loss, slice by slice (`length_groups`): each slice's loss is
    summed over the whole batch's target count (`num_items_in_batch`), so the gradient is the one
    padded batch's. `model`: the LLM (language examples) or the video model (conversations with
    `video_features`). With `hist`, records each example's accuracy. Returns the loss."""
    total = max(1, int((batch["labels"] != -100).sum()))  # the first position is never a target
    loss = 0.0
    for part in length_groups(batch, groups):
        out = model(**{k: v for k, v in part.items() if k not in ("kinds", "spans")}, num_items_in_batch=total)
        out.loss.backward()
        loss += out.loss.item()
        if hist is not None:
            _record_accuracy(hist, out.logits.detach(), part)
    return loss


def _record_accuracy(hist: dict, logits: torch.Tensor, batch: dict) -> None:
    """Per example and kind: induction, the share of its targets predicted right (greedy); binding
    and enum, whether all of them are (the greedy answer is then exactly right)."""
    with torch.no_grad():
        pred = logits[:, :-1].argmax(-1)
        for i, (kind, (a, end)) in enumerate(zip(batch["kinds"], batch["spans"])):
            right = pred[i, a - 1:end - 1] == batch["input_ids"][i, a:end]
            hist[kind].append(right.float().mean().item() if kind == "induction" else float(right.all()))


def _recent_accuracy(hist: dict, n: int, digits: int = 3) -> dict:
    """Mean of the last `n` per-example accuracies of each kind."""
    return {k: round(float(np.mean(v[-n:])), digits) if v else None for k, v in hist.items()}


PROGRESS_EVERY = 50  # steps between the vision and align parts' progress lines (between held-out checks)


def _progress(part: str, done: int, step: int, total: int, loss, t0: float) -> None:
    """A progress line: the step, its loss, the pace of this run and the time left at that pace."""
    per = (time.time() - t0) / max(1, done)
    loss = loss.item() if torch.is_tensor(loss) else loss  # still holds its graph: no float() of it
    info(f"{part} step {step}/{total} loss {loss:.3f} {per:.2f} s/step, "
         f"about {per * (total - step) / 60:.0f} min left")


def _last(loss: torch.Tensor | float) -> float | None:
    """The last training loss for the metrics file; None when the part trained no step (JSON has no NaN)."""
    loss = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    return None if math.isnan(loss) else round(loss, 4)


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def train_language(model, processor, records, cfg: FoundationConfig, out: Path) -> dict:
    lm = model.language_model.train()
    lm.requires_grad_(True)
    tok = processor.tokenizer
    rng = random.Random(cfg.seed)
    opt = torch.optim.AdamW(lm.parameters(), lr=cfg.language_lr, weight_decay=0.0, betas=(0.9, 0.98))
    warm, decay_from = 50, int(cfg.language_steps * 0.8)

    def lr_factor(s: int) -> float:  # constant through the plateau, then cosine down to 10%
        if s < warm:
            return (s + 1) / warm
        if s < decay_from:
            return 1.0
        p = (s - decay_from) / max(1, cfg.language_steps - decay_from)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * p))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    ckpt, start = out / "language" / "checkpoint.pt", 0
    if ckpt.is_file():
        st = torch.load(ckpt, weights_only=True)
        lm.load_state_dict(st["lm"]); opt.load_state_dict(st["opt"]); sched.load_state_dict(st["sched"])
        rng.setstate(st["rng"]); start = st["step"]
        info(f"language: resumed at step {start}")
    hist: dict[str, list[float]] = {"induction": [], "binding": [], "enum": []}
    formats, pool = tuple(cfg.binding_formats), option_pool(records)
    t0 = time.time()
    for step in range(start, cfg.language_steps):
        batch = language_batch(rng, records, tok, cfg.language_batch, cfg.induction_fraction, formats, pool)
        loss = sliced_backward(lm, batch, hist)
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        if (step + 1) % 250 == 0 or step + 1 == cfg.language_steps:
            acc = _recent_accuracy(hist, 1600)
            info(f"language step {step + 1}/{cfg.language_steps} loss {loss:.3f} "
                 f"lr {sched.get_last_lr()[0]:.2e} accuracy (last ~50 steps) {acc} {time.time() - t0:.0f}s")
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.language_steps:
            _save_checkpoint(ckpt, {"lm": lm.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                                    "rng": rng.getstate(), "step": step + 1})
    lm.requires_grad_(False)
    return {f"{k}_acc": v for k, v in _recent_accuracy(hist, 1600, 4).items()} | {"steps": cfg.language_steps}


# ---------------------------------------------------------------------------------------------
# align: connector + LLM read the video


def caption_cut(rng: random.Random, caption: str) -> str:
    """The caption's first sentence (it names every object and colour) half of the time, else the
    caption up to a random sentence. Whole captions alone dilute the visual targets: a probe with
    first sentences opened the gap between the right and another clip within ~150 steps, random
    cuts with the same budget did not."""
    sentences = [x for x in caption.split(". ") if x]
    k = 1 if rng.random() < 0.5 else rng.randint(1, len(sentences))
    text = ". ".join(sentences[:k])
    return text if text.endswith(".") else text + "."


GROUNDED_TURNS = 6  # grounded questions per training clip


def own_question(record: dict, mode: str = "open", trace: bool = False) -> tuple[str, str, str]:
    """The clip's own dataset question (direction, order, count, ...). `mode` "open": answered with
    the answer's text, what the cold start's thinking states before its option check. "reason": with
    the item's options and the reasoning instruction, joined as GRPO and the synthetic task's
    evaluation join them, answered with that text stated, the option check and the letter; `trace`:
    the thinking is the item's whole reasoning trace, which states what the frames show first.
    "option": with the options and the option instruction, as option mode asks it, answered with
    the letter alone."""
    if mode == "open":
        return "question", record["question"], record["answer_text"]
    problem = format_problem(record["question"], record["options"])
    if mode == "option":
        return "question", f"{problem}\n{OPTION_SUFFIX}", record["answer"]
    if mode != "reason":
        raise ValueError(f"own_question mode must be open, reason or option, got {mode!r}")
    k = LETTERS.index(record["answer"])
    think = record["reasoning"] if trace else checked_thinking(record["options"], k)
    return "question", grpo_question(problem), reasoned_answer(think, record["answer"])


def caption_conversation(record: dict, text: str) -> list[dict]:
    return [{"from": "human", "value": "<image>\n" + record["prompt"]}, {"from": "gpt", "value": text}]


def cycle_mix(cfg: "FoundationConfig", cycle: int) -> "FoundationConfig":
    """The align settings of cycle `cycle` (0-based): the later cycles' own option share, if set."""
    later = cfg.align_later_question_option_fraction
    return cfg if cycle == 0 or later is None else replace(cfg, align_question_option_fraction=later)


def align_conversation(rng: random.Random, record: dict, grounded: list, cfg: "FoundationConfig") -> list[dict]:
    """One align training conversation for a clip: grounded questions (open, multiple choice, or
    multiple choice in reason mode; some clips also their own dataset question) or a caption cut."""
    if grounded and rng.random() < cfg.align_grounded_fraction:
        picks = rng.sample(range(len(grounded)), min(GROUNDED_TURNS, len(grounded)))
        mc = with_options(grounded, rng)  # distractors from all of the clip's answers
        rs = with_options(grounded, rng, reason=True) if cfg.align_reason_fraction else None
        turns = []
        for j in picks:
            if rng.random() >= cfg.align_choice_fraction:
                turns.append(grounded[j])
            else:
                turns.append(rs[j] if rs and rng.random() < cfg.align_reason_fraction else mc[j])
        # drawn only when asked for, so builds without it keep their draws
        if cfg.align_question_fraction and rng.random() < cfg.align_question_fraction:
            rf, of = cfg.align_question_reason_fraction, cfg.align_question_option_fraction
            u = rng.random() if rf or of else 1.0  # one draw picks the form; none when every one is open
            mode = "reason" if u < rf else "option" if u < rf + of else "open"
            turns.insert(rng.randrange(len(turns) + 1), own_question(record, mode, cfg.align_question_trace))
        return grounded_conversation(turns)
    return caption_conversation(record, caption_cut(rng, record["caption"]))


def runs_right(pred: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """(runs predicted exactly, runs): a run is a stretch of supervised labels (one answer and its
    EOS); `pred[:, t]` is the prediction for `labels[:, t]`."""
    sup = labels != -100
    wrong = sup & (pred != labels)
    starts = sup & ~torch.cat([torch.zeros_like(sup[:, :1]), sup[:, :-1]], dim=1)
    run_id = torch.cumsum(starts.long(), dim=1) * sup  # 1, 2, ... per row; 0 off the runs
    n = int(starts.sum())
    bad = sum(len(set(run_id[r][wrong[r]].tolist())) for r in range(labels.shape[0]))
    return n - bad, n


def spliced_labels(model, batch: dict, labels: torch.Tensor) -> torch.Tensor:
    """`labels` on the model's spliced sequence (the video placeholder replaced by the video
    tokens), so positions line up with the logits."""
    video = model.connector(batch["video_features"])
    return model.prepare_inputs_embeds(batch["input_ids"], batch["attention_mask"], video, labels)[3]


def answers_right(model, batch: dict) -> tuple[int, int]:
    """(answers predicted exactly, answers) of a batch of multi-turn conversations, teacher-forced."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    labels = spliced_labels(model, batch, batch["labels"])
    pred = model(**inputs).logits[:, :-1].argmax(-1)
    return runs_right(pred, labels[:, 1:])


class ObjectHead(torch.nn.Module):
    """Names an object's region and colour from one frame's connector latents: the object's shape is
    the query of one attention over the latents (shapes are unique in a scene)."""

    def __init__(self, dim: int, width: int = 64):
        from tinyvr.data.synthetic.grounding import REGIONS
        from tinyvr.data.synthetic.scene import COLOURS, SHAPES

        super().__init__()
        self.query = torch.nn.Embedding(len(SHAPES), width)
        self.key, self.value = torch.nn.Linear(dim, width), torch.nn.Linear(dim, width)
        self.hidden = torch.nn.Sequential(torch.nn.Linear(2 * width, width), torch.nn.GELU())
        self.place, self.colour = torch.nn.Linear(width, len(REGIONS)), torch.nn.Linear(width, len(COLOURS))

    def forward(self, latents: torch.Tensor, shape: torch.Tensor):  # [B, L, D], [B] -> [B, 9], [B, colours]
        q = self.query(shape)
        att = (self.key(latents) @ q.unsqueeze(-1)).squeeze(-1).div(q.shape[-1] ** 0.5).softmax(-1)
        h = self.hidden(torch.cat([(att.unsqueeze(-1) * self.value(latents)).sum(1), q], -1))
        return self.place(h), self.colour(h)


def object_loss(model, head: ObjectHead, feats: torch.Tensor, facts: list[list[tuple]]):
    """The head's summed region and colour losses on the facts of each clip of `feats`, and the share
    of regions and of colours it names right."""
    cfg = model.config
    lat = model.connector(feats).view(len(feats), cfg.group, cfg.num_queries // cfg.group, -1)
    per_group = cfg.num_frames // cfg.group
    rows = [(c, k // per_group, s, r, col) for c, fs in enumerate(facts) for k, s, r, col in fs]
    c, grp, shape, region, colour = (torch.tensor(v) for v in zip(*rows))
    place, col = head(lat[c, grp], shape)
    loss = F.cross_entropy(place, region) + F.cross_entropy(col, colour)
    return loss, (place.argmax(-1) == region).float().mean().item(), (col.argmax(-1) == colour).float().mean().item()


def warm_connector(model, head: ObjectHead, feats: torch.Tensor, objects: list, n_va: int,
                   cfg: FoundationConfig) -> dict:
    """`cfg.align_object_warmup` steps of the connector and the object head alone on the training clips'
    object facts (align_batch clips, up to 8 objects each); returns the head's held-out accuracy."""
    rng, t0 = random.Random(cfg.seed + 2), time.time()  # its own stream: the align steps' draws stay the same
    params = list(model.connector.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.align_lr, weight_decay=0.0, betas=(0.9, 0.98))
    train = [i for i in range(n_va, len(objects)) if objects[i]] or [i for i in range(len(objects)) if objects[i]]
    loss = torch.tensor(float("nan"))
    for step in range(cfg.align_object_warmup):
        idx = [rng.choice(train) for _ in range(cfg.align_batch)]
        loss = object_loss(model, head, feats[idx], [rng.sample(objects[i], min(8, len(objects[i]))) for i in idx])[0]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
        if (step + 1) % PROGRESS_EVERY == 0:
            _progress("connector warm-up", step + 1, step + 1, cfg.align_object_warmup, loss, t0)
    with torch.no_grad():
        va = [i for i in range(n_va) if objects[i]]
        _, place, colour = object_loss(model, head, feats[va], [objects[i] for i in va]) if va else (0, 0.0, 0.0)
    res = {"object_place_acc": round(place, 4), "object_colour_acc": round(colour, 4), "loss": _last(loss)}
    info(f"align: connector warm-up {cfg.align_object_warmup} steps, held-out {res} {time.time() - t0:.0f}s")
    return res


def train_alignment(model, processor, items, cfg: FoundationConfig, out: Path) -> dict:
    records = [r for r, _ in items]
    model.vision_tower.requires_grad_(False)
    model.connector.requires_grad_(True)
    model.language_model.requires_grad_(True)
    model.train()
    with torch.no_grad():  # the frozen tower's features, once per clip, 32 clips per forward
        feats = torch.cat([
            model.vision_features(torch.stack([clip_pixels(cand, processor)[0] for _, cand in items[i:i + 32]]))
            for i in range(0, len(items), 32)])
    n_va = max(1, len(items) // 10)  # held-out clips: caption loss with the right and another clip
    head, objects = None, None  # the object head, only when it is trained (older builds keep their checkpoints)
    if cfg.align_object_weight or cfg.align_object_warmup:
        objects = [object_facts(cand, processor.num_frames) for _, cand in items]
    fresh_connector = {k: v.clone() for k, v in model.connector.state_dict().items()}
    warm, decay_from = max(1, cfg.align_steps // 20), int(cfg.align_steps * 0.8)

    def lr_factor(s: int) -> float:  # warm-up, constant, cosine to 10% over the last fifth
        if s < warm:
            return (s + 1) / warm
        p = max(0.0, (s - decay_from) / max(1, cfg.align_steps - decay_from))
        return 0.1 + 0.45 * (1 + math.cos(math.pi * p))

    def new_cycle():
        """A cycle's own head (seeded), optimizer, schedule and draws: every cycle starts as the first did."""
        nonlocal head
        params = [p for p in model.parameters() if p.requires_grad]
        if objects is not None:
            torch.manual_seed(cfg.seed)
            head = ObjectHead(model.config.text_config.hidden_size)
            params += list(head.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.align_lr, weight_decay=0.0, betas=(0.9, 0.98))
        return params, opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_factor), random.Random(cfg.seed + 1)

    params, opt, sched, rng = new_cycle()
    ckpt, cycle, start, warmed, done = out / "align" / "checkpoint.pt", 0, 0, None, []
    if ckpt.is_file():
        st = torch.load(ckpt, weights_only=True)
        cycle, done = st.get("cycle", 0), st.get("cycles_done", [])
        if cycle:
            params, opt, sched, rng = new_cycle()
        model.load_state_dict(st["model"]); opt.load_state_dict(st["opt"]); sched.load_state_dict(st["sched"])
        if head is not None:
            head.load_state_dict(st["object_head"])
        rng.setstate(st["rng"]); start, warmed = st["step"], st.get("object_warmup")
        info(f"align: resumed at cycle {cycle + 1} step {start}")

    grounded = [grounded_questions(cand, processor.num_frames, motion=cfg.align_grounded_motion,
                                   compare=cfg.align_grounded_compare) for _, cand in items]
    held_out = {"choice_": [with_options(grounded[j], random.Random(j)) for j in range(n_va)],  # fixed options
                # the place questions alone: the look-up a tower without place cannot serve (item 35)
                "where_": [[q for q in grounded[j] if q[0].startswith("where")] for j in range(n_va)]}
    if cfg.align_grounded_motion:  # the motion questions alone (clips without one are skipped)
        held_out["move_"] = [[q for q in grounded[j] if q[0] == MOTION_KIND] for j in range(n_va)]
    if cfg.align_grounded_compare:  # the object questions alone, as one letter (clips without one are skipped)
        held_out["compare_"] = [[q for q in held_out["choice_"][j] if q[0] in OBJECT_KINDS] for j in range(n_va)]
    if cfg.align_reason_fraction:
        held_out["reason_"] = [with_options(grounded[j], random.Random(j), reason=True) for j in range(n_va)]
    if cfg.align_question_fraction:
        held_out["question_"] = [[own_question(records[j])] for j in range(n_va)]
    if cfg.align_question_reason_fraction:
        held_out["question_reason_"] = [[own_question(records[j], "reason", cfg.align_question_trace)]
                                        for j in range(n_va)]
    if cfg.align_question_option_fraction or cfg.align_later_question_option_fraction:
        held_out["question_option_"] = [[own_question(records[j], "option")] for j in range(n_va)]

    def first_sentence(i: int) -> list[dict]:
        return caption_conversation(records[i], records[i]["caption"].split(". ")[0].rstrip(".") + ".")

    def encode(convs: list, idx: list[int], shift: int = 0) -> dict:
        enc = [dict(zip(("input_ids", "labels"), processor.encode_conversation(c))) for c in convs]
        b = processor.collate(enc, padding_side="right")
        b["video_features"] = feats[[idx[(j + shift) % len(idx)] for j in range(len(idx))]]
        return b

    def evaluate() -> dict:
        """On held-out clips, with each clip and with another clip: the caption's first-sentence loss,
        and the share of grounded answers right (teacher-forced, every token), asked openly, the place
        questions alone (openly), as multiple choice (fixed options per clip) and, when the align part
        trains it, as multiple choice in reason mode (answer stated, option check, letter)."""
        model.eval()
        res = {}
        with torch.no_grad():
            for name, shift in (("matched", 0), ("mismatched", 1)):
                tot = cnt = 0
                right, asked = dict.fromkeys(["", *held_out], 0), dict.fromkeys(["", *held_out], 0)
                for i in range(0, n_va, 32):
                    idx = list(range(i, min(i + 32, n_va)))
                    b = encode([first_sentence(j) for j in idx], idx, shift)
                    t = int((b["labels"] != -100).sum())
                    tot += model(**b).loss.item() * t
                    cnt += t
                    idx = [j for j in idx if grounded[j]]
                    for kind, v in (("", grounded), *held_out.items()):
                        sub = [j for j in idx if v[j]]
                        if sub:
                            r, n = answers_right(model, encode([grounded_conversation(v[j]) for j in sub], sub, shift))
                            right[kind], asked[kind] = right[kind] + r, asked[kind] + n
                res[f"first_sentence_loss_{name}"] = round(tot / max(1, cnt), 4)
                # the object head on held-out clips (when trained): does the connector keep place?
                if name == "matched" and head is not None:
                    _, place, colour = object_loss(model, head, feats[:n_va], objects[:n_va])
                    res["object_place_acc"], res["object_colour_acc"] = round(place, 4), round(colour, 4)
                for kind in right:
                    res[f"grounded_{kind}acc_{name}"] = round(right[kind] / max(1, asked[kind]), 4)
        model.train()
        return res

    hist: dict[str, list[float]] = {"induction": [], "binding": [], "enum": []}
    formats, pool = tuple(cfg.binding_formats), option_pool(records)
    induction = cfg.induction_fraction if cfg.align_induction_fraction is None else cfg.align_induction_fraction
    def save(step: int) -> None:
        _save_checkpoint(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                                "rng": rng.getstate(), "step": step, "cycle": cycle, "cycles_done": done,
                                **({"object_head": head.state_dict()} if head is not None else {}),
                                **({"object_warmup": warmed} if warmed and step else {})})

    t0, loss, res = time.time(), float("nan"), None
    name = "align" if cfg.align_cycles == 1 else "align cycle {}/" + str(cfg.align_cycles)
    while cycle < cfg.align_cycles:
        part, mix = name.format(cycle + 1), cycle_mix(cfg, cycle)
        if start == 0 and cfg.align_object_warmup:  # (repeated whole after a crash within it: short, seeded)
            warmed = warm_connector(model, head, feats, objects, n_va, cfg)
        paced = time.time()  # each cycle's pace from its own first step: the part's clock made it hours
        for step in range(start, cfg.align_steps):
            idx = [n_va + rng.randrange(len(items) - n_va) for _ in range(cfg.align_batch)] if len(items) > n_va else [0]
            video = encode([align_conversation(rng, records[i], grounded[i], mix) for i in idx], idx)
            text = language_batch(rng, records, processor.tokenizer, cfg.align_batch, induction, formats, pool)
            loss = sliced_backward(model, video)  # the video loss and the language replay's, added
            if cfg.align_object_weight:  # up to 8 objects per clip, drawn from the align rng
                facts = [rng.sample(objects[i], min(8, len(objects[i]))) for i in idx]
                keep = [j for j, f in enumerate(facts) if f]
                if keep:
                    obj_loss = object_loss(model, head, feats[[idx[j] for j in keep]], [facts[j] for j in keep])[0]
                    (cfg.align_object_weight * obj_loss).backward()
            sliced_backward(model.language_model, text, hist)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
            last = step + 1 == cfg.align_steps
            if (step + 1) % cfg.eval_every == 0 or last:
                res = evaluate()
                info(f"{part} step {step + 1}/{cfg.align_steps} video loss {loss:.3f} held-out {res} "
                     f"language accuracy {_recent_accuracy(hist, 800)} {time.time() - t0:.0f}s")
                if last and cycle + 1 < cfg.align_cycles:
                    done.append(res)
            elif (step + 1) % PROGRESS_EVERY == 0:
                _progress(part, step + 1 - start, step + 1, cfg.align_steps, loss, paced)
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and not last:
                save(step + 1)
        cycle, start = cycle + 1, 0
        if cycle < cfg.align_cycles:  # the next cycle: a fresh connector (or this one), head, schedule, draws
            if cfg.align_cycle_connector == "fresh":
                model.connector.load_state_dict(fresh_connector)
            params, opt, sched, rng = new_cycle()
            if cfg.save_every:  # a crash in the next cycle resumes here, not in the finished one
                save(0)
    model.requires_grad_(False)
    # the last step's held-out check is the final one (the weights have not changed since)
    return {**(res or evaluate()), "video_loss": _last(loss), "steps": cfg.align_steps * cfg.align_cycles,
            **({"object_warmup": warmed} if warmed else {}), **({"cycles": done} if done else {}),
            **{f"{k}_acc": v for k, v in _recent_accuracy(hist, 800, 4).items()}}


# ---------------------------------------------------------------------------------------------
# the recipe


def build_foundation(out: str | Path, cfg: FoundationConfig | None = None, part: str = "all") -> Path:
    """Run `part` of the foundation recipe under `out` (see the module docstring)."""
    from safetensors.torch import load_file, save_file

    from tinyvr.recipes.common import init_model_folder, load_model, save_model
    from tinyvr.utils.seed import seed_everything

    cfg = cfg or FoundationConfig()
    cfg.check()
    if part not in PARTS:
        raise ConfigError(f"foundation --part must be one of {list(PARTS)}, got {part!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)

    tower_file, lm_file = out / "vision" / "tower.safetensors", out / "language" / "lm.safetensors"
    missing = [str(p) for p in (tower_file, lm_file) if not p.is_file()]
    if part == "align" and missing:
        raise ConfigError(f"foundation align: run the vision and language parts first; missing {missing}")
    init = out / "init"
    items = None
    if not (init / "config.json").is_file():
        banner("foundation 1/4: items, tokenizer, fresh tiny model")
        items = foundation_items(cfg.seed, cfg.items)
        # written aside, then renamed: two parts started side by side cannot see half a folder
        tmp = out / f"init.tmp{os.getpid()}"
        init_model_folder("tiny", tmp, seed=cfg.seed, corpus=corpus_of([r for r, _ in items]),
                          tokenizer=cfg.tokenizer_from or None, overrides=cfg.model_overrides)
        try:
            tmp.rename(init)
        except OSError:  # the other part was first; its folder is the same (same seed)
            shutil.rmtree(tmp)
    _check_overrides(init, cfg.model_overrides)
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}

    if part in ("all", "vision") and not tower_file.is_file():
        banner("foundation 2/4: vision tower, dense per-patch colour and shape")
        items = items or foundation_items(cfg.seed, cfg.items)
        model, processor = load_model(init)
        if cfg.vision_init:
            _load_part(model.vision_tower, Path(cfg.vision_init), "vision_tower.", init)
            info(f"vision: starting from {cfg.vision_init}")
        metrics["vision"] = train_vision(model, processor, items, cfg, out)
        tower_file.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.vision_tower.state_dict().items()}, tower_file)
        _merge_metrics(metrics_path, "vision", metrics["vision"], cfg)
    if part in ("all", "language") and not lm_file.is_file():
        banner("foundation 3/4: language model, induction + multiple-choice binding")
        items = items or foundation_items(cfg.seed, cfg.items)
        model, processor = load_model(init)
        if cfg.language_init:
            _load_part(model.language_model, Path(cfg.language_init), "language_model.", init)
            info(f"language: starting from {cfg.language_init}")
        metrics["language"] = train_language(model, processor, [r for r, _ in items], cfg, out)
        lm_file.parent.mkdir(parents=True, exist_ok=True)
        sd = model.language_model.state_dict()
        sd.pop("lm_head.weight", None)  # tied to the embeddings
        save_file({k: v.contiguous() for k, v in sd.items()}, lm_file)
        _merge_metrics(metrics_path, "language", metrics["language"], cfg)
    # done means the weights are there too: git holds foundations/tiny's config and tokenizer but not
    # its weights (too large), and a manifest without them is no finished build
    if part in ("all", "align") and (out / "foundation.json").is_file() and foundation_weights(out).is_file():
        info(f"foundation: done already ({out / 'model'})")
    elif part in ("all", "align"):
        banner("foundation 4/4: align the connector and the LLM to the video")
        items = items or foundation_items(cfg.seed, cfg.items)
        model, processor = load_model(init)
        model.vision_tower.load_state_dict(load_file(tower_file))
        _load_part(model.language_model, lm_file, "language_model.", init)
        metrics["align"] = train_alignment(model, processor, items, cfg, out)
        _merge_metrics(metrics_path, "align", metrics["align"], cfg)
        final = save_model(model, processor, out / "model")
        metrics = json.loads(metrics_path.read_text())
        manifest = {"config": asdict(cfg), "metrics": metrics, "split": SPLIT,
                    "weights_sha256": file_sha256(final / "model.safetensors")}
        (out / "foundation.json").write_text(json.dumps(manifest, indent=2) + "\n")
        info(f"foundation model: {final}")
    return out


def foundation_weights(out: str | Path) -> Path:
    """A built foundation's weights: the whole model (tower, connector, LLM) under `out`."""
    return Path(out) / "model" / "model.safetensors"


def _load_part(module, path: Path, prefix: str, init: Path) -> None:
    """Load `module` from a part's own file or from a whole model's safetensors (keys under `prefix`).
    A whole model's folder carries its tokenizer: it must be the one of `init`, or the embedding
    rows would mean other tokens."""
    from safetensors.torch import load_file

    sd = load_file(path)
    if any(k.startswith(prefix) for k in sd):
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    theirs = path.parent / "tokenizer.json"
    if theirs.is_file() and theirs.read_bytes() != (init / "tokenizer.json").read_bytes():
        raise ConfigError(f"foundation: {path} was trained with another tokenizer than {init} "
                          f"(build with the same --seed and --items)")
    res = module.load_state_dict(sd, strict=False)
    if [k for k in res.missing_keys if not k.endswith("lm_head.weight")] or res.unexpected_keys:  # head: tied
        raise ConfigError(f"foundation: {path} does not fit the model: {res}")
    module.tie_weights()  # the LLM's head is its embedding matrix (a no-op for the tower)


def _check_overrides(init: Path, overrides: dict) -> None:
    """A resumed build must not silently ignore new model overrides: its init folder fixes the model."""
    config = json.loads((init / "config.json").read_text())
    for key, value in overrides.items():
        pairs = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in pairs:
            have = config.get(key, {}).get(sub) if sub else config.get(key)
            if have != v:
                name = f"{key}.{sub}" if sub else key
                raise ConfigError(f"foundation --model: {init} was built with {name}={have!r}, not {v!r}; "
                                  f"use a new --out for another model size")


def _merge_metrics(path: Path, key: str, value: dict, cfg: FoundationConfig | None = None) -> None:
    """Read-modify-write, so the two parts running side by side keep each other's numbers. With
    `cfg`, the part's own settings go with its numbers: parts run as separate commands, so the
    manifest's `config` (the last command's) does not say how an earlier part was trained."""
    cur = json.loads(path.read_text()) if path.is_file() else {}
    if cfg is not None:
        value = value | {"settings": {k: v for k, v in asdict(cfg).items() if k in PART_SETTINGS[key]}}
    cur[key] = value
    path.write_text(json.dumps(cur, indent=2) + "\n")
