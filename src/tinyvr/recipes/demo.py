"""`tinyvr demo`: the TinyLLaVA-Video-R1 study, small, on one CPU machine.

    synthetic data -> tiny model + tokenizer -> pretrain -> SFT ("base") -> cold start (16) -> GRPO
    -> evaluate SFT / ColdStart / R1 on test and test_heldout in option and reason modes
    -> runs/demo/results.json and runs/demo/report.md (tables like the paper's, curves, reasoning)

Each finished stage leaves its model folder; running the command again skips finished stages,
resumes an interrupted one from its last checkpoint, and reuses finished evaluations.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from tinyvr.data.synthetic import DEFAULT_SIZES
from tinyvr.utils.logging import banner, info

PACKAGED_CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "tiny"
# The tiny foundation (foundations/tiny/README.md; git holds all but its weights, `make foundation` builds
# them): where `tinyvr demo` starts when they are there
REPO_FOUNDATION = Path(__file__).resolve().parents[3] / "foundations" / "tiny"
STAGES = ("pretrain", "sft", "coldstart", "grpo")
EVAL_STAGES = {"sft": "sft", "coldstart": "coldstart", "r1": "grpo"}  # paper row -> stage folder
SPLITS = ("test", "test_heldout")
MODES = ("option", "reason")
ABLATIONS = {  # name -> GRPO overrides (the paper's ablations)
    "full": [],
    "no_coldstart": ["model.init_from={sft}"],
    "no_length_reward": ["rl.continuous_length=false"],
    "no_wrong_penalty": ["rl.wrong_penalty=false"],
    "no_noise": ["rl.noise_std=0.0"],
}
# The stage configs (configs/tiny/) are the tiny recipe from the foundation, what meets both measured
# bars: `tinyvr demo --full` runs them as written, on `tinyvr data synth`'s default sizes (SFT on 72,000
# option answers, GRPO 400 steps; about 100 min here with R1 at three seeds, items 41-43). The demo's
# default shortens it to fit the main command's 15 minutes (item 44): SFT sees 8,000 answers, GRPO runs
# 300 steps.
QUICK_OVERRIDES = {"grpo": ["optim.max_steps=300"]}
# A fresh, random tiny model (no foundation) needs its tower and LLM trained in the caption stage and
# far larger steps to learn the format at all (from a foundation those rates erase its reason-mode
# skill, items 27-28); its GRPO runs the 30 steps of the first demos on all eight families.
FRESH_OVERRIDES = {
    "pretrain": ["model.trainable=[vision_tower,connector,language_model]"],
    "sft": ["optim.lr=5e-4"],
    "coldstart": ["optim.lr=5e-4", "optim.epochs=25"],
    "grpo": ["optim.lr=1e-5", "optim.max_steps=30", "data.family_probe=0"],
}


def split_stage_overrides(overrides: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The demo's overrides as (for every stage, {stage: for that stage only}). `sft:optim.lr=1e-4`
    reaches the SFT stage alone (stages: pretrain, sft, coldstart, grpo; the GRPO seeds, ablations and
    evaluations take grpo's); a plain `key=value` reaches every stage."""
    from tinyvr.errors import ConfigError

    common, per_stage = [], {}
    for o in overrides:
        key = o.split("=", 1)[0]
        if ":" not in key:
            common.append(o)
            continue
        stage, rest = o.split(":", 1)
        if stage not in STAGES:
            raise ConfigError(f"override {o!r}: no stage {stage!r}; valid: {', '.join(STAGES)}")
        per_stage.setdefault(stage, []).append(rest)
    return common, per_stage


def start_overrides(stage: str, foundation: str, full: bool = False) -> list[str]:
    """The overrides a stage gets for the model the demo starts from: a fresh model's rates, the quick
    run's shorter GRPO from a foundation, none with `--full` (the configs as written)."""
    if not foundation:
        return FRESH_OVERRIDES.get(stage, [])
    return [] if full else QUICK_OVERRIDES.get(stage, [])


# the splits a fresh model's demo draws (minutes); from a foundation the quick run draws the default
# sizes but 8,000 option answers for SFT, `--full` the default sizes (`tinyvr data synth`'s)
DEMO_SIZES = {**DEFAULT_SIZES, "sft": 2000, "rl": 600}
QUICK_SFT = 8000
# `tinyvr demo --full`: the configs as written, R1 at three GRPO seeds side by side
FULL = {"seeds": 3, "jobs": 3}


def resolve_foundation(arg: str | None) -> str:
    """`--foundation`: not given, foundations/tiny if its weights are built (else a fresh model, "");
    `none`, a fresh tiny model (""); else that folder."""
    from tinyvr.recipes.foundation import foundation_weights

    if arg is None:  # shown relative to the working directory when it is inside it (the repository root)
        if not foundation_weights(REPO_FOUNDATION).is_file():
            info(f"no foundation weights in {REPO_FOUNDATION} (too large for git; build them once with "
                 "`make foundation`, about 90 min): starting from a fresh tiny model, which stays near chance")
            return ""
        try:
            return str(REPO_FOUNDATION.relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(REPO_FOUNDATION)
    return "" if arg.strip().lower() == "none" else arg


def demo_sizes(foundation: str, given: dict[str, int] | None = None, full: bool = False) -> dict[str, int]:
    """The split sizes the demo generates for the model it starts from: `given` (`--sizes`) where it
    names a split, elsewhere the data's defaults with `--full`, else the quick run's."""
    if full:
        base = dict(DEFAULT_SIZES)
    else:
        base = {**DEFAULT_SIZES, "sft": QUICK_SFT} if foundation else dict(DEMO_SIZES)
    return {**base, **(given or {})}


def _config_dir(config_dir: str) -> Path:
    d = Path(config_dir) if config_dir else PACKAGED_CONFIGS
    if not (d / "grpo.yaml").is_file():
        from tinyvr.errors import ConfigError

        raise ConfigError(f"--config-dir {d}: no stage configs (pretrain/sft/coldstart/grpo.yaml) there")
    return d


def stage_overrides(stage: str, out: Path, data: Path, seed: int) -> list[str]:
    prev = {"pretrain": out / "init", "sft": out / "pretrain" / "model",
            "coldstart": out / "sft" / "model", "grpo": out / "coldstart" / "model"}[stage]
    train_file = {"pretrain": "pretrain.json", "sft": "sft.json", "coldstart": "coldstart-16.json",
                  "grpo": "rl.jsonl"}[stage]
    return [f"run.output_dir={out / stage}", f"run.seed={seed}", f"model.init_from={prev}",
            f"data.train_file={data / train_file}", f"data.video_root={data}",
            "data.eval_file=",  # the demo evaluates every stage fully at the end
            "run.save_every=20"]


def _done(folder: Path) -> bool:
    return (folder / "model" / "config.json").is_file() and (folder / "model" / "DONE").is_file()


def run_stage_once(stage: str, cfg_dir: Path, overrides: list[str]) -> Path:
    """Train one stage unless its model folder is already complete; resume if interrupted."""
    from tinyvr.config import load_config
    from tinyvr.recipes import run_stage

    cfg = load_config(cfg_dir / f"{stage}.yaml", overrides)
    folder = Path(cfg.run.output_dir)
    if _done(folder):
        info(f"{stage}: done already ({folder / 'model'})")
        return folder / "model"
    t0 = time.time()
    final = run_stage(cfg, resume=True)
    (Path(final) / "DONE").write_text(f"{time.time() - t0:.1f}\n")
    info(f"{stage}: finished in {time.time() - t0:.0f} s")
    return Path(final)


def evaluate_once(model_dir: Path, data: Path, target: Path, cfg, *, split: str, mode: str, seed: int,
                  label: str, limit: int = 0, temperature: float = 0.0, samples: int = 1, load=None) -> dict:
    """results.json of one synthetic (split, mode) evaluation in `target`: reused when finished, else
    run with the demo's eval settings. `load` (optional) returns the loaded (model, processor), so
    several evaluations of one model load it once."""
    from tinyvr.recipes.common import load_model
    from tinyvr.recipes.evaluate import evaluate, load_items

    if (target / "results.json").is_file():
        return json.loads((target / "results.json").read_text())
    model, processor = load() if load else load_model(model_dir)
    task, items = load_items("synthetic", data, split=split, limit=limit)
    tokens = cfg.eval.max_new_tokens if mode == "reason" else cfg.eval.option_max_new_tokens
    return evaluate(model, processor, task, items, mode, target, temperature=temperature, samples=samples,
                    max_new_tokens=tokens, batch_size=cfg.eval.batch_size, seed=seed,
                    extraction=cfg.eval.extraction, label=label, model_name=str(model_dir))


def evaluate_stage(model_dir: Path, data: Path, out: Path, *, seed: int, cfg, limit: int = 0) -> dict:
    """{split: {mode: accuracy}} plus reasoning stats, reusing finished results."""
    from functools import cache

    from tinyvr.recipes.common import load_model

    load = cache(lambda: load_model(model_dir))  # loaded at the first evaluation not yet finished
    scores, reasoning, outcomes = {}, {}, {}
    for split in SPLITS:
        for mode in MODES:
            r = evaluate_once(model_dir, data, out / f"{split}-{mode}", cfg, split=split, mode=mode, seed=seed,
                              label=out.name, limit=limit, load=load)
            scores.setdefault(split, {})[mode] = r["scores"]["Avg"]
            outcomes.setdefault(split, {})[mode] = {"acc": r["scores"]["Avg"], "counts": r["counts"],
                                                    "answers": r.get("answers")}
            if mode == "reason" and r.get("reasoning"):
                reasoning[split] = r["reasoning"]
            info(f"{out.name} {split} {mode}: {r['scores']['Avg']:.3f}")
    return {"scores": scores, "reasoning": reasoning, "outcomes": outcomes}


def grpo_verdict(coldstart: dict, r1: dict, r1_seed_accs: list[float]) -> dict:
    """Does GRPO beat its cold start on held-out reason accuracy by more than the seed-to-seed spread?

    `coldstart` / `r1` are the two models' held-out reason-mode outcomes ({"acc": the table's score,
    "counts": correct / unparseable / total, "answers": {letter: n}}), `r1_seed_accs` the R1 accuracy of every GRPO seed
    run (one without --ablations: spread unknown). The accuracy is split into how often an answer
    parses and how often a parsed answer is right, and the share of the most common answer is kept:
    a gain that is only format, or one letter given to every item, shows as such."""
    from tinyvr.eval.metrics import top_answer

    def parts(o: dict) -> dict:
        c, answered = o["counts"], o["counts"]["total"] - o["counts"]["unparseable"]
        top, share = top_answer(o.get("answers")) or (None, None)
        return {"acc": o["acc"],  # the score the table and the seed runs report, not recomputed
                "parseable": answered / c["total"] if c["total"] else 0.0,
                "acc_parsed": c["correct"] / answered if answered else 0.0,
                "top_answer": top, "top_share": share}

    start, mean = parts(coldstart)["acc"], statistics.mean(r1_seed_accs)
    std = statistics.stdev(r1_seed_accs) if len(r1_seed_accs) > 1 else None
    return {"coldstart": parts(coldstart), "r1": parts(r1), "r1_seed_accs": list(r1_seed_accs),
            "r1_mean": mean, "r1_std": std, "gain": mean - start,
            "beats_spread": None if std is None else (mean - start) > std}


def item_changes(before: Path, after: Path, seed: int) -> dict:
    """Item by item, what GRPO changed against its cold start (two evaluations' predictions.jsonl of
    the same items): items it got right that the cold start got wrong, items it lost, and the
    one-sided sign-test p of "gained no more often than lost". An accuracy gain of a few points can
    be a few items, within what a resample of the test items moves."""
    from tinyvr.errors import TinyVRError
    from tinyvr.rl.family_probe import binomial_tail
    from tinyvr.utils.logging import read_jsonl

    was = {r["id"]: r["correct"] for r in read_jsonl(before / "predictions.jsonl")}
    now = {r["id"]: r["correct"] for r in read_jsonl(after / "predictions.jsonl")}
    if was.keys() != now.keys():
        raise TinyVRError(f"{after}: its items are not those of {before}; evaluate both on the same split")
    gained = sum(1 for k in was if now[k] and not was[k])
    lost = sum(1 for k in was if was[k] and not now[k])
    return {"seed": seed, "gained": gained, "lost": lost, "items": len(was),
            "p": binomial_tail(gained, gained + lost, 0.5) if gained + lost else 1.0}


HEADROOM_SAMPLES = 8


def headroom_dir(out: Path) -> Path:
    """Where `measure_headroom` keeps a model's sampled held-out evaluation inside `out`."""
    return out / f"test_heldout-reason-k{HEADROOM_SAMPLES}"


def measure_headroom(model_dir: Path, data: Path, out: Path, *, seed: int, cfg, limit: int = 0) -> dict:
    """GRPO's room to sharpen: K answers per held-out item (reason mode, sampled as GRPO's rollouts
    sample) scored by pass@1, majority vote and pass@K. GRPO moves the policy towards the answers its
    own samples find, so greedy accuracy can rise only where the majority of samples beats it."""
    r = evaluate_once(model_dir, data, headroom_dir(out), cfg,
                      split="test_heldout", mode="reason", seed=seed, label=out.name, limit=limit,
                      temperature=cfg.rollout.temperature, samples=HEADROOM_SAMPLES)
    return r["sampling"]


def sampled_verdict(coldstart: Path, r1: list[Path], seeds: list[int]) -> dict:
    """GRPO's gain on held-out reason mode as the reference's evaluation decodes (its scripts sample at
    temperature 1, top-k 50; spec section 8): the pass@1 of K sampled answers per item, from the
    predictions.jsonl of `measure_headroom`'s evaluations of the cold start and of every R1 seed.

    Per seed, the items' differences (R1's share of right samples minus the cold start's) give a
    paired mean and its standard error, so a seed's change can be told from the resampling of the
    test items; across seeds, the mean gain is set against the seed-to-seed spread as in
    `grpo_verdict`."""
    from tinyvr.errors import TinyVRError
    from tinyvr.utils.logging import read_jsonl

    def shares(folder: Path) -> tuple[dict[str, float], int]:
        rows = read_jsonl(folder / "predictions.jsonl")
        if not rows or any(not r.get("samples") for r in rows):
            raise TinyVRError(f"{folder}: not an evaluation with sampled answers (eval --samples K)")
        return {r["id"]: r["samples_correct"] / len(r["samples"]) for r in rows}, len(rows[0]["samples"])

    cold, samples = shares(coldstart)
    start = statistics.mean(cold.values())
    accs, items = [], []
    for folder, s in zip(r1, seeds):
        now, _ = shares(folder)
        if now.keys() != cold.keys():
            raise TinyVRError(f"{folder}: its items are not those of {coldstart}; evaluate both on the same split")
        diff = [now[k] - cold[k] for k in cold]
        se = statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else 0.0
        accs.append(statistics.mean(now.values()))
        items.append({"seed": s, "items": len(diff), "diff": statistics.mean(diff), "se": se})
    std = statistics.stdev(accs) if len(accs) > 1 else None
    mean = statistics.mean(accs)
    card = coldstart / "results.json"
    decoding = json.loads(card.read_text()).get("card", {}).get("decoding", {}) if card.is_file() else {}
    return {"samples": samples, "temperature": decoding.get("temperature"), "top_k": decoding.get("top_k"), "coldstart": start,
            "r1_seed_accs": accs, "r1_mean": mean, "r1_std": std, "gain": mean - start,
            "beats_spread": None if std is None else (mean - start) > std, "items": items}


def foundation_model_dir(foundation: str | Path) -> Path:
    """The model folder of a foundation built by `tinyvr foundation` (its `model/`), checked
    against the sha256 its foundation.json records."""
    from tinyvr.errors import ConfigError
    from tinyvr.recipes.foundation import foundation_weights
    from tinyvr.utils.hashing import file_sha256

    root = Path(foundation)
    manifest = root / "foundation.json"
    if not manifest.is_file():
        raise ConfigError(f"--foundation {root}: no foundation.json there (build one with "
                          f"`tinyvr foundation --out {root}`)")
    want = json.loads(manifest.read_text()).get("weights_sha256")
    weights = foundation_weights(root)
    if not weights.is_file():
        raise ConfigError(f"--foundation {root}: {weights} is missing")
    got = file_sha256(weights)
    if got != want:
        raise ConfigError(f"--foundation {root}: {weights} has sha256 {got[:12]}..., foundation.json "
                          f"records {str(want)[:12]}...; the file changed after it was built")
    return root / "model"


def _init_origin(foundation: str) -> dict:
    if not foundation:
        return {"foundation": None}
    foundation_model_dir(foundation)
    m = json.loads((Path(foundation) / "foundation.json").read_text())
    return {"foundation": str(foundation), "weights_sha256": m["weights_sha256"]}


def _read_origin(init: Path) -> dict:
    """What `init/` was made from (origin.json; a folder from before it existed: a fresh model)."""
    p = init / "origin.json"
    return json.loads(p.read_text()) if p.is_file() else {"foundation": None}


def _check_reused_init(init: Path, origin: dict) -> None:
    """A rerun reuses `init/` only if it came from the same start (fresh, or the same foundation)."""
    from tinyvr.errors import ConfigError

    if not (init / "config.json").is_file():
        return
    found = _read_origin(init)
    if found.get("weights_sha256") != origin.get("weights_sha256"):
        was = f"the foundation {found['foundation']}" if found.get("foundation") else "a fresh tiny model"
        now = f"the foundation {origin['foundation']}" if origin.get("foundation") else "a fresh tiny model"
        raise ConfigError(f"{init}: this demo folder started from {was}, this run asks for {now}. "
                          "Run again with --fresh to start over, or choose another --out.")


def _check_reused_data(path: Path, manifest: dict, *, seed: int, sizes: dict[str, int]) -> None:
    """A rerun reuses the data folder only if it is what this run would generate: an older
    generator version, another seed or other sizes would silently mix datasets across stages."""
    from tinyvr.data.synthetic.writer import GENERATOR_VERSION
    from tinyvr.errors import ConfigError

    wanted = {"generator": GENERATOR_VERSION, "seed": seed,
              **{f"sizes.{k}": v for k, v in sizes.items()}}
    found = {"generator": manifest.get("generator"), "seed": manifest.get("seed"),
             **{f"sizes.{k}": manifest.get("sizes", {}).get(k) for k in sizes}}
    diff = [f"{k}: {found[k]!r} (this run: {v!r})" for k, v in wanted.items() if found[k] != v]
    if diff:
        raise ConfigError(f"{path}: the existing demo data differs from this run's: {'; '.join(diff)}. "
                          "Run again with --fresh to start over, or choose another --out.")


def run_demo(out: str = "runs/demo", *, ablations: bool = False, seeds: int = 1, seed: int = 0,
             fresh: bool = False, config_dir: str = "", overrides: list[str] | None = None,
             eval_limit: int = 0, sizes: dict[str, int] | None = None, foundation: str = "",
             jobs: int = 1, full: bool = False) -> Path:
    from tinyvr.config import load_config
    from tinyvr.data.synthetic import generate_dataset
    from tinyvr.recipes.common import init_model_folder

    t_start = time.time()
    out = Path(out)
    cfg_dir = _config_dir(config_dir)
    common, per_stage = split_stage_overrides(list(overrides or []))  # a bad stage name fails before any work
    overrides = common + per_stage.get("grpo", [])  # the GRPO runs' and the evaluations'
    if jobs < 1:
        from tinyvr.errors import ConfigError

        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    origin = _init_origin(foundation)  # a bad --foundation fails before anything is built or removed
    if fresh and out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    banner("1/6 synthetic video-reasoning data")
    data = out / "data"
    sizes = demo_sizes(foundation, sizes, full)
    if not (data / "manifest.json").is_file():
        generate_dataset(data, seed=seed, sizes=sizes)
    manifest = json.loads((data / "manifest.json").read_text())
    _check_reused_data(data / "manifest.json", manifest, seed=seed, sizes=sizes)
    info(f"data: {manifest.get('counts')}")

    banner("2/6 tiny model and tokenizer")
    _check_reused_init(out / "init", origin)
    if not (out / "init" / "config.json").is_file():
        if foundation:
            import shutil

            shutil.copytree(foundation_model_dir(foundation), out / "init", dirs_exist_ok=True)
            info(f"starting from the foundation {foundation} (sha256 {origin['weights_sha256'][:12]})")
        else:
            corpus = _corpus(data)
            init_model_folder("tiny", out / "init", seed=seed, corpus=corpus)
        (out / "init" / "origin.json").write_text(json.dumps(origin, indent=2) + "\n")
    info(f"model folder: {out / 'init'}")
    models = {}
    variants = ABLATIONS if ablations else {"full": ABLATIONS["full"]}
    for i, stage in enumerate(STAGES):
        banner(f"{3 + (i >= 3)}/6 {stage}")
        if stage == "grpo" and jobs > 1 and (ablations or seeds > 1):  # R1 and the other GRPO runs side by side
            train_in_parallel(cfg_dir, grpo_runs(out, data, start_overrides("grpo", foundation, full) + overrides,
                                                 seeds=seeds, seed=seed, variants=variants), jobs)
        models[stage] = run_stage_once(stage, cfg_dir, stage_overrides(stage, out, data, seed)
                                       + start_overrides(stage, foundation, full) + common + per_stage.get(stage, []))

    banner("5/6 evaluation: SFT / ColdStart / R1 x test / test_heldout x option / reason")
    eval_cfg = load_config(cfg_dir / "grpo.yaml", overrides)
    results, reasoning, outcomes = {}, {}, {}
    for row, stage in EVAL_STAGES.items():
        r = evaluate_stage(models[stage], data, out / "eval" / row, seed=seed, cfg=eval_cfg, limit=eval_limit)
        results[row], reasoning[row], outcomes[row] = r["scores"], r["reasoning"], r["outcomes"]
    headroom = {"greedy": results["coldstart"]["test_heldout"]["reason"],
                **measure_headroom(models["coldstart"], data, out / "eval" / "coldstart", seed=seed, cfg=eval_cfg,
                                   limit=eval_limit)}
    info(f"cold start, held-out reason: greedy {headroom['greedy']:.3f}, "
         f"maj@{HEADROOM_SAMPLES} {headroom[f'maj@{HEADROOM_SAMPLES}']:.3f} (GRPO's headroom)")

    # R1 at more seeds (the first is the R1 stage above), and the ablations: the spread a gain must beat
    seed_runs = None
    if ablations or seeds > 1:
        seed_runs = run_ablations(out, data, cfg_dir, start_overrides("grpo", foundation, full) + overrides,
                                  seeds=seeds, seed=seed, eval_cfg=eval_cfg, limit=eval_limit, variants=variants)
    ablation_summary = seed_runs if ablations else None
    held = {row: outcomes[row]["test_heldout"]["reason"] for row in ("coldstart", "r1")}
    verdict = grpo_verdict(held["coldstart"], held["r1"], seed_runs["full"]["acc"] if seed_runs
                           else [results["r1"]["test_heldout"]["reason"]])
    r1_evals = [Path(e) for e in seed_runs["full"]["evals"]] if seed_runs else [heldout_reason_eval(out, out / "grpo")]
    verdict["items"] = [item_changes(out / "eval" / "coldstart" / "test_heldout-reason", e, seed + k)
                        for k, e in enumerate(r1_evals)]
    # the same comparison under the reference's sampled decoding: K answers per item from every R1 seed
    r1_runs = [(s, f) for _, s, f, _ in grpo_runs(out, data, [], seeds=seeds, seed=seed, variants={"full": []})]
    for _, f in r1_runs:
        measure_headroom(f / "model", data, heldout_reason_eval(out, f).parent, seed=seed, cfg=eval_cfg,
                         limit=eval_limit)
    verdict["sampled"] = sampled_verdict(headroom_dir(out / "eval" / "coldstart"),
                                         [headroom_dir(heldout_reason_eval(out, f).parent) for _, f in r1_runs],
                                         [s for s, _ in r1_runs])

    banner("6/6 report")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    summary = {"results": results, "reasoning": reasoning, "headroom": headroom, "grpo_gain": verdict,
               "ablations": ablation_summary,
               "wall_seconds": round(time.time() - t_start, 1), "seed": seed, "sizes": manifest.get("counts"),
               "start": _read_origin(out / "init")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    report = write_demo_report(out, results, reasoning, ablation_summary, headroom, verdict)
    info(f"results: {out / 'results.json'}")
    info(f"report:  {report}")
    _print_table(results)
    return report


def _corpus(data: Path) -> list[str]:
    """Tokenizer training text: the dataset's own questions, captions and reasoning."""
    texts = []
    for name in ("pretrain.json", "sft.json", "coldstart-16.json"):
        p = data / name
        if p.is_file():
            for item in json.loads(p.read_text()):
                texts.extend(turn["value"].replace("<image>", "") for turn in item["conversations"])
    for name in ("rl.jsonl",):
        p = data / name
        if p.is_file():
            for line in p.read_text().splitlines():
                row = json.loads(line)
                texts.append(row["problem"])
                texts.append(row.get("reasoning", ""))
    return texts


def grpo_runs(out: Path, data: Path, overrides: list[str], *, seeds: int, seed: int,
              variants: dict[str, list[str]]) -> list[tuple[str, int, Path, list[str]]]:
    """Every GRPO run of `--seeds` / `--ablations` as (variant, seed, folder, overrides), variant by
    variant. The full recipe at the demo's own seed is the R1 stage itself (`out/grpo`, the same
    settings), so it is listed with that folder rather than trained twice."""
    runs = []
    for name, extra in variants.items():
        for s in range(seed, seed + seeds):
            if name == "full" and s == seed:
                runs.append((name, s, out / "grpo", stage_overrides("grpo", out, data, s) + overrides))
                continue
            folder = out / "ablations" / f"{name}-seed{s}"
            ov = stage_overrides("grpo", out, data, s) + [f"run.output_dir={folder}"]
            runs.append((name, s, folder, ov + [e.format(sft=out / "sft" / "model") for e in extra] + overrides))
    return runs


def _train_logged(cfg_dir: str, overrides: list[str], log: str) -> str:
    """A GRPO run in a worker process of `train_in_parallel`, its output to `log` (C-level too)."""
    import os
    import sys

    Path(log).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush(); sys.stderr.flush()
    os.dup2(fd, 1); os.dup2(fd, 2)
    os.close(fd)
    try:
        return str(run_stage_once("grpo", Path(cfg_dir), overrides))
    except BaseException:
        import traceback

        traceback.print_exc()  # the log says why, next to the run's own output
        raise
    finally:
        sys.stdout.flush(); sys.stderr.flush()


def _last_step(folder: Path) -> int:
    from tinyvr.utils.logging import read_jsonl

    rows = read_jsonl(folder / "metrics.jsonl")  # a line being written is skipped
    return int(rows[-1].get("step", 0)) if rows else 0


def train_in_parallel(cfg_dir: Path, runs: list[tuple[str, int, Path, list[str]]], jobs: int) -> None:
    """Train the unfinished GRPO `runs` in `jobs` worker processes, each with its share of the cores
    as torch threads (a run's own `run.threads` override wins). On a small CPU the tiny model's
    matrices are too small to keep two threads busy, so two one-thread runs side by side finish
    sooner than the same two runs one after the other at two threads (`benchmarks/parallel_grpo.py`).
    A run writes its output to `<folder>/train.log`; progress is printed every minute. Every run is
    awaited before a failure is raised, so one bad run loses nobody else's work; a rerun resumes."""
    import concurrent.futures as cf
    import multiprocessing

    from tinyvr.errors import TinyVRError
    from tinyvr.utils.device import cpu_cores

    todo = [(f"{name} seed {s}", folder, ov) for name, s, folder, ov in runs if not _done(folder)]
    if not todo:
        return
    workers = min(jobs, len(todo))
    threads = max(1, cpu_cores() // workers)
    info(f"GRPO: {len(todo)} runs in {workers} processes, {threads} thread(s) each; "
         f"logs: " + ", ".join(str(f / "train.log") for _, f, _ in todo))
    failed = []
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        running = {pool.submit(_train_logged, str(cfg_dir), [f"run.threads={threads}"] + ov, str(folder / "train.log")):
                   (label, folder) for label, folder, ov in todo}
        t0 = time.time()
        while running:
            finished, _ = cf.wait(running, timeout=60, return_when=cf.FIRST_COMPLETED)
            for f in finished:
                label, folder = running.pop(f)
                try:
                    f.result()
                    info(f"GRPO {label}: finished ({folder / 'model'})")
                except Exception as e:  # reported after the others finish; the run resumes on a rerun
                    failed.append(f"{label}: {type(e).__name__}: {e} (log: {folder / 'train.log'})")
                    info(f"GRPO {label}: FAILED, see {folder / 'train.log'}")
            if running:
                info(f"GRPO in parallel, {time.time() - t0:.0f}s: "
                     + ", ".join(f"{label} step {_last_step(folder)}" for label, folder in running.values()))
    if failed:
        raise TinyVRError("GRPO runs failed (rerun the same command to resume them):\n  " + "\n  ".join(failed))


def heldout_reason_eval(out: Path, folder: Path) -> Path:
    """The held-out reason-mode evaluation of a GRPO run: the R1 stage's (`out/grpo`) is the demo's
    R1 row, every other run's is in its own folder."""
    return (out / "eval" / "r1" if folder == out / "grpo" else folder / "eval") / "test_heldout-reason"


def run_ablations(out: Path, data: Path, cfg_dir: Path, overrides, *, seeds: int, seed: int, eval_cfg,
                  limit: int = 0, variants: dict[str, list[str]] | None = None) -> dict:
    """GRPO variants (default: all of ABLATIONS) from the same cold start (or SFT), several seeds;
    held-out reason accuracy. The full recipe at the demo's own seed is the R1 stage itself, so its
    model and evaluation are reused rather than trained again."""
    from tinyvr.utils.logging import read_jsonl

    summary = {}
    runs = grpo_runs(out, data, overrides, seeds=seeds, seed=seed,
                     variants=ABLATIONS if variants is None else variants)
    for name in dict.fromkeys(r[0] for r in runs):
        accs, evals, zero_std, lazy = [], [], [], []
        for _, s, folder, ov in (r for r in runs if r[0] == name):
            target = heldout_reason_eval(out, folder)
            if folder != out / "grpo":
                banner(f"GRPO {name}, seed {s}")
            model_dir = run_stage_once("grpo", cfg_dir, ov)
            r = evaluate_once(model_dir, data, target, eval_cfg, split="test_heldout", mode="reason", seed=s,
                              label=name, limit=limit)
            accs.append(r["scores"]["Avg"])
            evals.append(str(target))
            lazy.append((r.get("reasoning") or {}).get("lazy_rate", float("nan")))
            rows = read_jsonl(folder / "metrics.jsonl")
            zero_std.append(statistics.mean(x.get("zero_std_frac", 0.0) for x in rows) if rows else float("nan"))
        summary[name] = {"acc": accs, "evals": evals, "acc_mean": statistics.mean(accs),
                         "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                         "zero_std_frac_mean": statistics.mean(zero_std), "lazy_rate_mean": statistics.mean(lazy)}
    return summary


def _print_table(results: dict) -> None:
    print("\n" + f"{'model':<11}" + "".join(f"{s + '/' + m:>20}" for s in SPLITS for m in MODES))
    for row, splits in results.items():
        print(f"{row:<11}" + "".join(f"{100 * splits[s][m]:>20.1f}" for s in SPLITS for m in MODES))


def _top(p: dict) -> str:
    return "–" if p["top_answer"] is None else f"{p['top_answer']} ({100 * p['top_share']:.0f}%)"


def _verdict_section(v: dict) -> str:
    n = len(v["r1_seed_accs"])
    r1 = f"{100 * v['r1_mean']:.1f}" + (f" ± {100 * v['r1_std']:.1f} ({n} seeds)" if n > 1 else " (1 seed)")
    lines = ["| | ColdStart | R1 |", "|---|---|---|",
             f"| accuracy | {100 * v['coldstart']['acc']:.1f} | {r1} |",
             f"| answers that parse | {100 * v['coldstart']['parseable']:.1f} | {100 * v['r1']['parseable']:.1f} |",
             f"| accuracy of the parsed answers | {100 * v['coldstart']['acc_parsed']:.1f} | "
             f"{100 * v['r1']['acc_parsed']:.1f} |",
             f"| most common answer (share of parsed) | {_top(v['coldstart'])} | {_top(v['r1'])} |", ""]
    if v["beats_spread"] is None:
        lines.append(f"GRPO changes held-out reason accuracy by {100 * v['gain']:+.1f} points with one seed; "
                     "`tinyvr demo --seeds 3` (R1 at three seeds) measures the seed-to-seed spread it must beat.")
    else:
        lines.append(f"GRPO changes held-out reason accuracy by {100 * v['gain']:+.1f} points (mean of {n} seeds); "
                     f"the seed-to-seed spread (std) is {100 * v['r1_std']:.1f}: the gain is "
                     f"{'above' if v['beats_spread'] else 'not above'} the spread.")
    if v.get("items"):
        each = "; ".join(f"seed {c['seed']}: {c['gained']} gained, {c['lost']} lost (sign test p {c['p']:.2f})"
                         for c in v["items"])
        lines.append(f"Item by item against the cold start ({v['items'][0]['items']} items): {each}. A seed's change "
                     "is clear of chance only when p is small; the spread across seeds does not show that.")
    lines.append("The lower rows (seed of the main run) say where a change comes from: the answer format (answers "
                 "that parse), the answers themselves (accuracy of the parsed ones), or one letter given to most "
                 "items (a prior, not the video; chance is about one in the number of options).")
    if v.get("sampled"):
        lines += ["", _sampled_section(v["sampled"])]
    return "\n".join(lines)


def _sampled_section(s: dict) -> str:
    n, k = len(s["r1_seed_accs"]), s["samples"]
    r1 = f"{100 * s['r1_mean']:.1f}" + (f" ± {100 * s['r1_std']:.1f} ({n} seeds)" if n > 1 else " (1 seed)")
    how = f"temperature {s.get('temperature')}, top-k {s.get('top_k')}"
    lines = [f"**Sampled, as the reference evaluates** (here {how}; the reference's scripts sample at temperature "
             f"1, top-k 50, their `--temperature 0` unused): the share of right answers among {k} sampled per item "
             "(pass@1).", "",
             "| | ColdStart | R1 |", "|---|---|---|", f"| sampled accuracy (pass@1) | {100 * s['coldstart']:.1f} | {r1} |",
             ""]
    if s["beats_spread"] is None:
        lines.append(f"GRPO changes sampled held-out reason accuracy by {100 * s['gain']:+.1f} points with one seed.")
    else:
        lines.append(f"GRPO changes sampled held-out reason accuracy by {100 * s['gain']:+.1f} points (mean of {n} "
                     f"seeds); the seed-to-seed spread (std) is {100 * s['r1_std']:.1f}: the gain is "
                     f"{'above' if s['beats_spread'] else 'not above'} the spread.")
    each = "; ".join(f"seed {c['seed']}: {100 * c['diff']:+.1f} ± {100 * c['se']:.1f}" for c in s["items"])
    lines.append(f"Item by item (mean of the per-item differences ± its standard error, {s['items'][0]['items']} "
                 f"items): {each}. The greedy table above is the project's own measure; GRPO sharpens the "
                 "distribution its rollouts sample, which shows here first.")
    return "\n".join(lines)


def _probe_section(p: dict) -> str:
    lines = ["| family | right / asked (greedy) | accuracy | chance | p | trained on |", "|---|---|---|---|---|---|"]
    for fam, f in p["families"].items():
        lines.append(f"| {fam} | {f['correct']} / {f['n']} | {100 * f['accuracy']:.1f} | {100 * f['chance']:.0f} | "
                     f"{f['p_value']:.3f} | {'yes' if fam in p['kept'] else 'no'} |")
    lines += ["", f"The cold start answered these rl prompts before GRPO; a family is trained on when its accuracy "
                  f"beats chance (one-sided binomial test, p < {p['alpha']})"
                  + (". None did, so GRPO trained on all of them." if p["fallback"] else ".")
              + " This is the R1 stage's probe; every other GRPO seed draws its own prompts to probe "
                "(family_probe.json in its folder), so a family near the threshold can go either way."]
    return "\n".join(lines)


def _start_line(init: Path) -> str:
    """What the stages started from, as the report's results say it."""
    o = _read_origin(init)
    if o.get("foundation"):
        return (f"Started from the foundation `{o['foundation']}` (pretrained tower, connector and LLM; "
                f"weights sha256 {o['weights_sha256'][:12]}...).")
    return ("Started from a fresh, random tiny model (no foundation: `--foundation none`, or its weights "
            "not built, `make foundation`).")


def write_demo_report(out: Path, results: dict, reasoning: dict, ablations: dict | None,
                      headroom: dict | None = None, verdict: dict | None = None) -> Path:
    from tinyvr.eval.report import plot_eval, render_report, results_from_demo

    names = {"sft": "TinyLLaVA-Video-SFT (tiny)", "coldstart": "TinyLLaVA-Video-ColdStart (tiny)",
             "r1": "TinyLLaVA-Video-R1 (tiny)"}
    lines = ["| Model | Answer type | test | test_heldout |", "|---|---|---|---|"]
    for row in results:
        for mode in MODES:
            lines.append(f"| {names[row]} | {'Option' if mode == 'option' else 'Reason'} | "
                         f"{100 * results[row]['test'][mode]:.1f} | {100 * results[row]['test_heldout'][mode]:.1f} |")
    body = "\n".join(lines) + "\n\n" + _start_line(out / "init")
    # bars per stage / mode / split side by side, from the same numbers as the table
    img = plot_eval(results_from_demo("demo", out / "results.json", results), out / "report_eval.png")
    if img is not None:
        body += f"\n\n![evaluation]({img.name})"
    sections = [("Results (accuracy %, synthetic benchmark, greedy decoding)", body)]
    rl = ["| Model | split | mean thinking length (chars) | lazy rate | aha rate | revised rate |",
          "|---|---|---|---|---|---|"]
    for row, by_split in reasoning.items():
        for split, st in by_split.items():
            rl.append(f"| {names[row]} | {split} | {st.get('think_chars_mean', float('nan')):.0f} | "
                      f"{st.get('lazy_rate', float('nan')):.2f} | {st.get('aha_rate', float('nan')):.2f} | "
                      f"{st.get('revised_rate', float('nan')):.2f} |")
    sections.append(("Reasoning statistics (reason mode)", "\n".join(rl)))
    if headroom:
        k = headroom["samples"]
        sections.append((f"GRPO headroom (cold start, test_heldout, reason mode, {k} samples per item)", "\n".join([
            f"| greedy | sampled pass@1 | majority of {k} | pass@{k} |", "|---|---|---|---|",
            f"| {100 * headroom['greedy']:.1f} | {100 * headroom['pass@1']:.1f} | {100 * headroom[f'maj@{k}']:.1f} | "
            f"{100 * headroom[f'pass@{k}']:.1f} |", "",
            "GRPO moves the policy towards the answers its own samples find (sampled as in its rollouts), so it "
            "can raise greedy accuracy where the majority of samples beats the greedy answer; where it does not, "
            "there is little to sharpen."])))
    if verdict:
        sections.append(("Does GRPO beat its cold start? (test_heldout, reason mode)", _verdict_section(verdict)))
    probe = out / "grpo" / "family_probe.json"
    if probe.is_file():
        sections.append(("Which question families GRPO trained on (family probe, rl split)",
                         _probe_section(json.loads(probe.read_text()))))
    examples = []
    for row, by_split in reasoning.items():
        for ex in (by_split.get("test_heldout") or {}).get("examples", [])[:2]:
            examples.append(f"- **{names[row]}**: {ex}")
    if examples:
        sections.append(("Aha-moment excerpts", "\n".join(examples)))
    if ablations:
        ab = ["| GRPO variant | held-out reason acc (mean ± std) | seeds | zero-std group fraction | lazy rate |",
              "|---|---|---|---|---|"]
        for name, s in ablations.items():
            ab.append(f"| {name} | {100 * s['acc_mean']:.1f} ± {100 * s['acc_std']:.1f} | {len(s['acc'])} | "
                      f"{s['zero_std_frac_mean']:.2f} | {s['lazy_rate_mean']:.2f} |")
        sections.append(("Ablations", "\n".join(ab)))
    runs = [out / s for s in ("grpo", "coldstart", "sft", "pretrain") if (out / s).is_dir()]
    # the paper-style tables lead; curves, per-run summaries and configs follow
    return render_report(runs, out / "report.md", title="tinyvr demo: TinyLLaVA-Video-R1, tiny",
                         lead_sections=sections)
