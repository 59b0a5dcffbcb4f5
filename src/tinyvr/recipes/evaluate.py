"""Evaluation: a task's items -> prompts (option or reason mode) -> batched generation -> answer
extraction -> scores as the benchmark reports them, a settings card and per-item predictions.

Every finished item is appended to `partial.jsonl` at once, so an interrupted evaluation resumes
where it stopped. The file's first line records the settings; a partial file written with other
settings (model, mode, frames, decoding, seed) is discarded rather than mixed in, and a line cut
by a kill is dropped and redone. Greedy decoding at temperature 0 (the original ignored
`--temperature 0` and sampled); sampling is seeded. `samples=K` (K > 1, temperature > 0) draws K
answers per item and scores their majority vote, with pass@1 and pass@K beside it: whether a policy's
samples know more than its greedy answer, i.e. whether GRPO has anything to sharpen.

`tinyvr eval` takes its settings from flags, from a config file (`--config`, the `model.*`,
`eval.*` and `run.*` sections of a `TrainConfig` YAML) or both, flags winning: see
`resolve_eval_settings`.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tinyvr.data.feature_cache import VideoInputs
from tinyvr.errors import TinyVRError
from tinyvr.eval import metrics
from tinyvr.eval.aha import analyze_reasoning, summarize
from tinyvr.eval.extract import extract_choice
from tinyvr.eval.tasks import get_task
from tinyvr.rl.rollout import RolloutEngine, SamplingParams
from tinyvr.utils.logging import info

MODE_MAX_NEW_TOKENS = {"option": 8, "reason": 512}


def evaluate(model, processor, task, items, mode: str, out_dir: str | Path, *, temperature: float = 0.0,
             max_new_tokens: int = 0, batch_size: int = 16, seed: int = 0, extraction: str = "strict",
             label: str | None = None, videos: VideoInputs | None = None, model_name: str = "",
             progress: bool = True, extra_card: dict | None = None, samples: int = 1) -> dict:
    from tinyvr.errors import ConfigError

    if samples < 1 or (samples > 1 and temperature <= 0):
        raise ConfigError(f"eval: --samples {samples} needs samples >= 1, and temperature > 0 when > 1 "
                          f"(got temperature {temperature})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    max_new = max_new_tokens or MODE_MAX_NEW_TOKENS[mode]
    params = SamplingParams(num_generations=samples, max_new_tokens=max_new, temperature=temperature,
                            top_k=50 if temperature > 0 else 0, top_p=1.0)
    settings = {"model": model_name or label or "model", "task": task.name, "mode": mode,
                "num_frames": processor.num_frames, "temperature": temperature, "max_new_tokens": max_new,
                "top_k": params.top_k, "seed": seed, "extraction": extraction}
    if samples > 1:  # absent at 1, so partial files of a greedy run written before it still resume
        settings["samples"] = samples
    partial = out_dir / "partial.jsonl"
    done = _resume_partial(partial, settings)
    videos = videos or VideoInputs(model, processor)
    engine = RolloutEngine(model, processor)
    gen = torch.Generator().manual_seed(seed)
    todo = [it for it in items if it.id not in done]
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=f"eval {task.name}/{mode}",
               disable=not progress, dynamic_ncols=True, leave=False)
    with open(partial, "a", encoding="utf-8") as sink:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start: start + batch_size]
            ok, feats, records = [], [], []
            for it in chunk:
                try:
                    feats.append(videos([it.video], [it.bound] if it.bound else None)["video_features"])
                    ok.append(it)
                except TinyVRError as e:  # counted wrong, and visible in counts.errors
                    records.append({**it.to_record(), "pred": None, "correct": False, "guessed": False,
                                    "error": str(e), "output": ""})
            if ok:
                prompts = [processor.encode_prompt(task.prompt(it, mode)) for it in ok]
                with torch.no_grad():
                    roll = engine.generate(prompts, model.connector(torch.cat(feats)), params, gen)
                for i, it in enumerate(ok):
                    texts = roll.texts[i * samples: (i + 1) * samples]  # a prompt's samples are adjacent
                    found = [extract_choice(text, dict(zip(it.letters, it.options)), mode=extraction,
                                            answer_format="tag" if mode == "reason" else "plain",
                                            rng=random.Random(f"{seed}:{it.id}" + (f":{j}" if j else "")))
                             for j, text in enumerate(texts)]  # the reference's random fallback, seeded
                    k = majority(found)
                    res, text = found[k], texts[k]
                    rec = {**it.to_record(), "pred": res.letter, "correct": res.letter == it.answer,
                           "guessed": res.guessed, "unparseable": res.letter is None, "error": None, "output": text}
                    if samples > 1:
                        rec["samples"] = [f.letter for f in found]
                        rec["samples_correct"] = sum(f.letter == it.answer for f in found)
                    records.append(rec)
            for r in records:
                sink.write(json.dumps(r, ensure_ascii=False) + "\n")
                done[r["id"]] = r
            sink.flush()
            bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    records = [done[it.id] for it in items]
    scores = task.aggregate(records)
    reasoning = None
    if mode == "reason":
        stats = [analyze_reasoning(r["output"], letters=None) for r in records if not r.get("error")]
        reasoning = summarize(stats)
    card = metrics.results_card(
        model=model_name or label or "model", task=task.name, mode=mode, num_frames=processor.num_frames,
        decoding={"temperature": temperature, "max_new_tokens": max_new, "top_k": params.top_k,
                  "top_p": params.top_p, "greedy": temperature <= 0, "extraction": extraction},
        seed=seed, data_files=getattr(items, "files", []), frame_sampling="linspace",
        extra=extra_card)
    path = metrics.write_results(out_dir, scores, card, records, task=task.name, mode=mode, label=label,
                                 skipped=getattr(items, "num_skipped", 0), reasoning=reasoning,
                                 sampling=metrics.sampling_scores(records, samples) if samples > 1 else None)
    partial.unlink(missing_ok=True)
    return json.loads(path.read_text())


def majority(found) -> int:
    """Index of the sample whose letter most samples agree on (unparseable ones never win unless all
    are); ties go to the letter drawn first."""
    votes = Counter(f.letter for f in found if f.letter is not None)
    if not votes:
        return 0
    top = max(votes.values())
    return next(j for j, f in enumerate(found) if f.letter is not None and votes[f.letter] == top)


def _resume_partial(partial: Path, settings: dict) -> dict:
    """Finished records of an interrupted run with the same settings, by id; rewrites the file so
    that it holds the settings line and whole records only (appending after a torn line would glue
    the next record onto it)."""
    done, header = {}, None
    if partial.exists():
        for i, line in enumerate(partial.read_text(encoding="utf-8").splitlines()):
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill is redone
            if not isinstance(r, dict):
                continue
            if i == 0 and "_settings" in r:
                header = r["_settings"]
            elif "id" in r:
                done[r["id"]] = r
        if header is not None and header != settings:
            changed = sorted(k for k in set(header) | set(settings) if header.get(k) != settings.get(k))
            info(f"{partial}: written with other settings ({', '.join(changed)}); starting over")
            done = {}
        elif done:
            info(f"{partial}: resuming, {len(done)} item(s) already done")
    tmp = partial.with_name(partial.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"_settings": settings}, ensure_ascii=False) + "\n")
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in done.values())
    os.replace(tmp, partial)
    return done


def load_items(task_name: str, data_root, *, split: str = "test", limit: int = 0):
    task = get_task(task_name)
    opts = {"split": split} if task_name == "synthetic" else {}
    return task, task.load(data_root, limit=limit or None, **opts)


def quick_eval(model, processor, cfg, out_dir: Path, videos=None) -> dict:
    """End-of-stage check on `data.eval_file` (synthetic jsonl), in the config's eval modes."""
    eval_file = Path(cfg.data.eval_file)
    task, items = load_items("synthetic", eval_file.parent, split=eval_file.stem, limit=cfg.data.eval_limit)
    results = {}
    for mode in cfg.eval.modes:
        r = evaluate(model, processor, task, items, mode, out_dir / f"{eval_file.stem}-{mode}",
                     temperature=cfg.eval.temperature,
                     max_new_tokens=cfg.eval.max_new_tokens if mode == "reason" else cfg.eval.option_max_new_tokens,
                     batch_size=cfg.eval.batch_size, seed=cfg.run.seed, extraction=cfg.eval.extraction,
                     label=cfg.run.name, videos=videos, model_name=str(cfg.run.output_dir),
                     progress=cfg.run.progress)
        results[mode] = r["scores"]["Avg"]
        top = metrics.top_answer(r.get("answers"))
        info(f"{cfg.run.name} {eval_file.stem} {mode}: accuracy {r['scores']['Avg']:.3f} "
             f"(unparseable {r['counts']['unparseable']}/{r['counts']['total']}"
             + (f"; most common answer {top[0]}, {100 * top[1]:.0f}%)" if top else ")"))
    return results


@dataclass
class EvalSettings:
    """Everything `tinyvr eval` needs, resolved from flags, a config file and built-in defaults."""

    model: str
    task: str = ""
    data_root: str = ""
    split: str = "test"
    modes: tuple[str, ...] = ("reason",)
    num_frames: int = 0  # 0 = the model's own
    temperature: float = 0.0
    samples: int = 1  # > 1: majority vote of that many sampled answers, with pass@1 and pass@K
    max_new_tokens: dict = field(default_factory=dict)  # mode -> tokens; 0 = MODE_MAX_NEW_TOKENS
    batch_size: int = 16
    seed: int = 0
    limit: int = 0
    extraction: str = "strict"
    out: str = ""  # parent folder of the per-(task, mode) result folders
    dtype: str = "auto"
    attn_implementation: str | None = None  # None = the transformers default
    tokenizer: str = ""
    device: str = "auto"
    threads: int = 0

    def out_dir(self, mode: str) -> Path:
        name = f"{self.task}-{self.split}" if self.task == "synthetic" else self.task
        return Path(self.out or Path("runs/eval") / Path(self.model).name) / f"{name}-{mode}"


# setting -> (flag attribute, config field); the flag wins, then the file (keys it sets), then the
# built-in default above
_SOURCES = {
    "model": ("model", "model.init_from"), "task": ("task", "eval.task"),
    "data_root": ("data_root", "eval.data_root"), "split": ("split", "eval.split"),
    "num_frames": ("num_frames", "model.num_frames"), "temperature": ("temperature", "eval.temperature"),
    "samples": ("samples", None),
    "batch_size": ("batch_size", "eval.batch_size"), "seed": ("seed", "run.seed"),
    "limit": ("limit", "eval.limit"), "extraction": ("extraction", "eval.extraction"),
    "out": ("out", "eval.output_dir"), "dtype": (None, "model.dtype"),
    "attn_implementation": (None, "model.attn_implementation"), "tokenizer": (None, "model.tokenizer"),
    "device": (None, "run.device"), "threads": (None, "run.threads"),
}


def _lookup(tree, dotted: str):
    """(found, value) of a dotted path in nested dicts / dataclasses."""
    node = tree
    for part in dotted.split("."):
        if isinstance(node, dict):
            if part not in node:
                return False, None
            node = node[part]
        else:
            node = getattr(node, part)
    return True, node


def resolve_eval_settings(a, *, command: str = "eval",
                          required: tuple[str, ...] = ("model", "task", "data_root")) -> EvalSettings:
    """Settings of `tinyvr eval` (or `infer`, which needs only a model) from its parsed flags `a`
    (None or absent = not given), `a.config` (a TrainConfig YAML; only the keys it sets count) and
    `a.overrides` (dotted, as for `train`)."""
    from tinyvr.config import apply_overrides, load_config, read_yaml
    from tinyvr.errors import ConfigError

    config = getattr(a, "config", "") or ""
    overrides = list(getattr(a, "overrides", None) or [])
    cfg = load_config(config or None, overrides)  # every value typed and checked; errors name the file
    given = apply_overrides(read_yaml(config) if config else {}, overrides)
    values = {}
    for name, (flag, field_path) in _SOURCES.items():
        flag_value = getattr(a, flag, None) if flag else None
        if flag_value is not None:
            values[name] = flag_value
        elif field_path and _lookup(given, field_path)[0]:
            values[name] = _lookup(cfg, field_path)[1]
    if getattr(a, "mode", None):
        values["modes"] = (a.mode,)
    elif _lookup(given, "eval.modes")[0]:
        values["modes"] = tuple(dict.fromkeys(cfg.eval.modes))
    modes = values.get("modes", EvalSettings.modes)
    if not modes:
        raise ConfigError(f"{config or 'eval'}: eval.modes is empty; list option and/or reason")
    if getattr(a, "max_new_tokens", None) is not None:
        values["max_new_tokens"] = {m: a.max_new_tokens for m in modes}
    else:
        tokens = {}
        for m, path in (("reason", "eval.max_new_tokens"), ("option", "eval.option_max_new_tokens")):
            if _lookup(given, path)[0]:
                tokens[m] = _lookup(cfg, path)[1]
        values["max_new_tokens"] = {m: tokens.get(m, 0) for m in modes}
    for name, lo in (("num_frames", 0), ("temperature", 0), ("batch_size", 1), ("limit", 0), ("samples", 1)):
        if name in values and values[name] < lo:
            raise ConfigError(f"{command}: --{name.replace('_', '-')} {values[name]} must be >= {lo}")
    if values.get("samples", 1) > 1 and values.get("temperature", 0) <= 0:  # before the model loads
        raise ConfigError(f"{command}: --samples {values['samples']} needs --temperature > 0 (greedy answers "
                          "would all be the same)")
    if any(v < 0 for v in values["max_new_tokens"].values()):
        raise ConfigError(f"{command}: --max-new-tokens must be >= 0")
    for name in required:
        if not values.get(name):
            where = f" (or {_SOURCES[name][1]} in {config})" if config else " (or --config FILE)"
            raise ConfigError(f"{command}: --{name.replace('_', '-')} is required{where}")
    from tinyvr.eval.tasks import TASKS

    if values.get("task") and values["task"] not in TASKS:
        raise ConfigError(f"{command}: unknown task {values['task']!r}; use one of {', '.join(TASKS)}")
    return EvalSettings(**values)


def evaluate_cli(a) -> None:
    from tinyvr.recipes.common import load_model
    from tinyvr.utils.device import pick_device, pick_dtype, set_threads
    from tinyvr.utils.seed import seed_everything

    st = resolve_eval_settings(a)
    seed_everything(st.seed)
    device = pick_device(st.device)
    if device.type == "cpu":
        set_threads(st.threads)
    dtype = pick_dtype(st.dtype, device)
    model, processor = load_model(st.model, device, dtype, tokenizer_dir=st.tokenizer or None,
                                  attn_implementation=st.attn_implementation)
    if st.num_frames:
        processor.num_frames = st.num_frames
    task, items = load_items(st.task, st.data_root, split=st.split, limit=st.limit)
    card = {"dtype": str(dtype).removeprefix("torch."),
            "attn_implementation": model.config._attn_implementation, "batch_size": st.batch_size}
    if getattr(a, "config", ""):
        card["config"] = str(a.config)
    for mode in st.modes:
        out = st.out_dir(mode)
        r = evaluate(model, processor, task, items, mode, out, temperature=st.temperature,
                     max_new_tokens=st.max_new_tokens[mode], batch_size=st.batch_size, seed=st.seed,
                     extraction=st.extraction, label=Path(st.model).name, model_name=str(st.model),
                     extra_card=card, samples=st.samples)
        shown = {k: r[k] for k in ("mode", "scores", "counts", "answers", "sampling") if k in r}
        print(json.dumps(shown, indent=2))
        print(f"wrote {out / 'results.json'}")
