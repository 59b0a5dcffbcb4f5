"""The `tinyvr` command. Heavy libraries are imported inside each subcommand so that
`tinyvr --help` answers at once (importing transformers costs ~9 s on a small CPU)."""

from __future__ import annotations

import argparse
import sys

from tinyvr import __version__


def _cmd_init_model(a):
    from tinyvr.recipes.common import init_model_folder

    path = init_model_folder(a.preset, a.out, seed=a.seed)
    print(f"wrote a randomly initialised '{a.preset}' model to {path}")


def _cmd_infer(a):
    from tinyvr.recipes.infer import infer_cli

    print(infer_cli(a))


def _cmd_data_synth(a):
    from tinyvr.data.synthetic import generate_dataset, parse_sizes

    sizes = parse_sizes(a.sizes) if a.sizes else None
    manifest = generate_dataset(a.out, seed=a.seed, sizes=sizes, workers=a.workers,
                                frame_size=a.frame_size, progress=not a.quiet)
    counts = manifest.get("counts", {})
    print(f"wrote {a.out}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


def _cmd_train(a):
    from tinyvr.config import load_config
    from tinyvr.recipes import run_stage

    cfg = load_config(a.config, a.overrides)
    if cfg.stage != a.stage and not (a.stage == "coldstart" and cfg.stage == "sft"):
        from tinyvr.errors import ConfigError

        raise ConfigError(f"{a.config}: stage is '{cfg.stage}' but the command asked for '{a.stage}'")
    run_stage(cfg, resume=a.resume)


def _cmd_validate(a):
    from tinyvr.recipes.validate import validate_run

    report = validate_run(a.config, a.overrides, data=a.data)
    print(report)


def _cmd_eval(a):
    from tinyvr.recipes.evaluate import evaluate_cli

    evaluate_cli(a)


def _cmd_report(a):
    from pathlib import Path

    from tinyvr.eval.report import render_report

    runs = [Path(r) for r in a.runs]
    out = Path(a.out) if a.out else runs[0] / "report.md"
    print(f"wrote {render_report(runs, out)}")


def _cmd_demo(a):
    from tinyvr.data.synthetic import parse_sizes
    from tinyvr.recipes.demo import FULL, resolve_foundation, run_demo

    full = FULL if a.full else {"seeds": 1, "jobs": 1}  # given flags win over --full's
    seeds = full["seeds"] if a.seeds is None else a.seeds
    jobs = full["jobs"] if a.jobs is None else a.jobs
    run_demo(out=a.out, ablations=a.ablations, seeds=seeds, seed=a.seed, fresh=a.fresh, config_dir=a.config_dir,
             overrides=a.overrides, eval_limit=a.eval_limit, sizes=parse_sizes(a.sizes) if a.sizes else None,
             foundation=resolve_foundation(a.foundation), jobs=jobs, full=a.full)


def _json_arg(text: str, flag: str) -> dict:
    import json

    from tinyvr.errors import ConfigError

    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{flag}: not valid JSON ({e}): {text!r}") from e
    if not isinstance(value, dict):
        raise ConfigError(f"{flag}: expected a JSON object, got {text!r}")
    return value


def _cmd_foundation(a):
    from tinyvr.config import read_yaml
    from tinyvr.recipes.foundation import build_foundation, foundation_config

    # the recipe file first, then every flag that was given (flags win)
    data = read_yaml(a.config) if a.config else {}
    flags = {name: getattr(a, name) for name in FOUNDATION_FLAGS if getattr(a, name) is not None}
    if a.model is not None:
        flags["model_overrides"] = _json_arg(a.model, "--model")
    cfg = foundation_config(data | flags, where=a.config or "tinyvr foundation")
    print(build_foundation(a.out, cfg, part=a.part))


# `tinyvr foundation` flags that set a FoundationConfig field of the same name (default None: not given)
FOUNDATION_FLAGS = ("seed", "items", "vision_steps", "vision_position_weight", "language_steps", "align_steps",
                    "binding_formats", "induction_fraction", "language_init", "vision_init", "align_induction_fraction",
                    "align_grounded_fraction", "align_choice_fraction", "align_reason_fraction", "align_question_fraction",
                    "align_question_reason_fraction", "align_question_option_fraction",
                    "align_later_question_option_fraction", "align_question_trace", "align_object_weight",
                    "align_object_warmup", "align_cycles", "align_cycle_connector", "align_grounded_motion",
                    "align_grounded_compare", "tokenizer_from",
                    "eval_every", "threads")


def _cmd_convert(a):
    from tinyvr.model.reference import convert

    print(convert(a.src, a.dst, to=a.to))


def _cmd_estimate_memory(a):
    from tinyvr.recipes.memory import estimate_memory_cli

    print(estimate_memory_cli(a.config, a.overrides, gpus=a.gpus, zero=a.zero, gpu_memory_gb=a.gpu_gb))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tinyvr",
        description="Teach small video-language models to reason about video with GRPO "
        "(TinyLLaVA-Video-R1, re-implemented).",
    )
    p.add_argument("--version", action="version", version=f"tinyvr {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("demo", help="the whole study on the embedded default: data, SFT, cold start, GRPO, eval, report")
    s.add_argument("--out", default="runs/demo")
    s.add_argument("--config-dir", default="", help="stage configs (default: the packaged tiny configs)")
    s.add_argument("--ablations", action="store_true", help="also run the paper's ablations")
    s.add_argument("--seeds", type=int, help="train R1 at N GRPO seeds (the report compares its gain with their spread); "
                   "with --ablations, every variant at N seeds; default 1 (3 with --full)")
    s.add_argument("--jobs", type=int, help="with --seeds or --ablations, train that many GRPO runs side "
                   "by side, each with its share of the cores (logs in each run's train.log); default 1 (3 with --full)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--fresh", action="store_true", help="ignore finished stages and start over")
    s.add_argument("--foundation", help="the pretrained tower and LLM to start from: a folder built by "
                   "`tinyvr foundation`, or `none` for a fresh random tiny model (default: foundations/tiny when "
                   "its weights are built by `make foundation`, else a fresh model)")
    s.add_argument("--full", action="store_true", help="the setting that meets the measured bars: the stage "
                   "configs as written on the data's default sizes (SFT on 72,000 option answers instead of 8,000, "
                   "GRPO 400 steps instead of 300), R1 at 3 GRPO seeds side by side (about 100 min on 2 CPU "
                   "cores instead of about 15)")
    s.add_argument("--eval-limit", type=int, default=0, help="evaluate only the first N items per split (a quick look)")
    s.add_argument("--sizes", default="", help="dataset sizes, e.g. pretrain=200,sft=400 (splits not given: the demo's sizes)")
    s.add_argument("overrides", nargs="*", help="dotted overrides applied to every stage, or to one with its name "
                   "first: sft:optim.lr=1e-4 (stages: pretrain, sft, coldstart, grpo)")
    s.set_defaults(func=_cmd_demo)

    s = sub.add_parser("foundation", help="pretrain the tiny model's tower and LLM once (perception, "
                       "in-context look-up); the demo can start from it")
    s.add_argument("--out", default="runs/foundation")
    s.add_argument("--config", default="", help="the recipe as YAML (FoundationConfig fields), e.g. "
                   "configs/tiny/foundation.yaml; flags that are given win; default: the built-in defaults")
    s.add_argument("--part", default="all", choices=["all", "vision", "language", "align"],
                   help="vision and language can run as two processes side by side, then align")
    s.add_argument("--seed", type=int, help="default 0")
    s.add_argument("--items", type=int, help="generated foundation items (default 2000)")
    s.add_argument("--vision-steps", type=int, help="default 1200")
    s.add_argument("--vision-position-weight", type=float,
                   help="weight of the per-patch row/column objective that keeps place in the tower's features "
                        "(default 1; 0: colour and shape only, as builds before item 35)")
    s.add_argument("--language-steps", type=int, help="default 6000")
    s.add_argument("--align-steps", type=int, help="default 600")
    s.add_argument("--binding-formats", help="comma list of which, hint, tail, pool, enum (see binding_example); "
                   "default which,hint")
    s.add_argument("--induction-fraction", type=float, help="default 0.5")
    s.add_argument("--language-init",
                   help="continue the language part from an earlier build's lm.safetensors or model.safetensors")
    s.add_argument("--vision-init",
                   help="continue the vision part from an earlier build's tower.safetensors or model.safetensors")
    s.add_argument("--model",
                   help='JSON overrides of the tiny preset, e.g. \'{"text_config": {"num_attention_heads": 8}}\'')
    s.add_argument("--align-induction-fraction", type=float,
                   help="induction share of the language examples replayed during align (default: --induction-fraction)")
    s.add_argument("--align-grounded-fraction", type=float,
                   help="share of align clips with grounded questions instead of a caption (default 0.5)")
    s.add_argument("--align-choice-fraction", type=float,
                   help="share of grounded questions asked as multiple choice, the answer is the letter (default 0.5)")
    s.add_argument("--align-reason-fraction", type=float,
                   help="share of those asked in reason mode: answer stated, option check, letter (default 0)")
    s.add_argument("--align-question-fraction", type=float,
                   help="share of grounded clips that also get their item's own question (any family), "
                        "answered openly with the answer's text (default 0)")
    s.add_argument("--align-question-reason-fraction", type=float,
                   help="share of those own questions asked as evaluation asks them in reason mode (the item's "
                        "options), answered with the stated answer, the option check and the letter (default 0)")
    s.add_argument("--align-object-weight", type=float,
                   help="weight of the object head (region and colour) on the connector's output during align "
                        "(default 0: none; item 35 used 1)")
    s.add_argument("--align-object-warmup", type=int,
                   help="steps of the connector and the object head alone before the joint align steps "
                        "(default 0)")
    s.add_argument("--align-cycles", type=int,
                   help="run the align part this many times over, each cycle with its own warm-up, head and "
                        "learning-rate schedule, the LLM carried on (default 1)")
    s.add_argument("--align-cycle-connector", choices=("fresh", "keep"),
                   help="each later align cycle's connector: as initialised (fresh, the default) or kept")
    s.add_argument("--align-grounded-motion", action="store_true", default=None,
                   help="grounded questions also ask which way each object went between the first and the "
                        "last sampled frame")
    s.add_argument("--align-grounded-compare", action="store_true", default=None,
                   help="grounded questions also ask which object appears first and which moves farther, "
                        "where the answer is clear")
    s.add_argument("--align-question-option-fraction", type=float,
                   help="share of those own questions asked as evaluation asks them in option mode, answered "
                        "with the letter alone (default 0; with the reason share at most 1)")
    s.add_argument("--align-later-question-option-fraction", type=float,
                   help="that option-mode share from the second align cycle on (default: the same in every "
                        "cycle)")
    s.add_argument("--align-question-trace", action="store_true", default=None,
                   help="answer those reason-form questions with the item's whole reasoning trace (what the "
                        "frames show first), as the cold start's samples do")
    s.add_argument("--tokenizer-from",
                   help="use an earlier build's tokenizer (its init/ or model/ folder) instead of training one, "
                        "so its weights can be continued after the generator's text changed")
    s.add_argument("--eval-every", type=int, help="steps between the vision and align parts' held-out checks "
                   "(they do not change the training; default 100)")
    s.add_argument("--threads", type=int, help="torch threads; 0 = all cores (default)")
    s.set_defaults(func=_cmd_foundation)

    s = sub.add_parser("init-model", help="write a randomly initialised model folder")
    s.add_argument("--preset", default="tiny")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_init_model)

    s = sub.add_parser("infer", help="answer a question about one video")
    s.add_argument("--model", default=None, help="model folder (or model.init_from in --config)")
    s.add_argument("--config", default="", help="typed YAML, e.g. configs/tinyllava_video_r1/eval.yaml; flags win")
    s.add_argument("--video", required=True)
    s.add_argument("--question", required=True)
    s.add_argument("--options", nargs="*", default=None, help='e.g. "A. red" "B. blue"')
    s.add_argument("--mode", choices=["option", "reason"], default=None, help="default: reason")
    s.add_argument("--max-new-tokens", type=int, default=None, help="default: 256 (or the config's)")
    s.add_argument("--temperature", type=float, default=None)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--num-frames", type=int, default=None)
    s.set_defaults(func=_cmd_infer)

    s = sub.add_parser("data", help="datasets")
    dsub = s.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    d = dsub.add_parser("synth", help="generate the synthetic video-reasoning dataset (.mp4 + json)")
    d.add_argument("--out", required=True)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--sizes", default="", help="e.g. pretrain=800,sft=2000,rl=600,test=200,test_heldout=200 "
                   "(splits not given: the tiny recipe's sizes, 72,000 for sft, about 10 min in all)")
    d.add_argument("--workers", type=int, default=None)
    d.add_argument("--frame-size", type=int, default=64)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_cmd_data_synth)

    s = sub.add_parser("train", help="run one training stage from a YAML config")
    s.add_argument("stage", choices=["pretrain", "sft", "coldstart", "grpo"])
    s.add_argument("--config", required=True)
    s.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rl.beta=0.04")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("validate", help="check a config (and its data) before training")
    s.add_argument("--config", required=True)
    s.add_argument("--data", default=None, help="data file to check instead of the config's")
    s.add_argument("overrides", nargs="*")
    s.set_defaults(func=_cmd_validate)

    s = sub.add_parser("eval", help="evaluate a model on a benchmark",
                       description="Settings come from the flags, from --config FILE (its model.*, "
                       "eval.* and run.* keys) or both; a flag overrides the file.")
    s.add_argument("--config", default="", help="YAML config, e.g. configs/tinyllava_video_r1/eval.yaml")
    s.add_argument("--model", default=None, help="model folder (config: model.init_from)")
    s.add_argument("--task", default=None, choices=["mvbench", "videomme", "mlvu", "mmvu", "synthetic"],
                   help="config: eval.task")
    s.add_argument("--data-root", default=None, help="benchmark folder (config: eval.data_root)")
    s.add_argument("--split", default=None, help="synthetic: test (default) or test_heldout")
    s.add_argument("--mode", choices=["option", "reason"], default=None,
                   help="default: the config's eval.modes, else reason")
    s.add_argument("--num-frames", type=int, default=None, help="0 = the model's own (default)")
    s.add_argument("--temperature", type=float, default=None, help="0 = greedy (default)")
    s.add_argument("--samples", type=int, default=None,
                   help="K > 1 sampled answers per item (needs --temperature > 0): scores are their "
                   "majority vote, results.json adds pass@1, maj@K and pass@K (default 1)")
    s.add_argument("--max-new-tokens", type=int, default=None,
                   help="0 = mode default (config: eval.max_new_tokens / eval.option_max_new_tokens)")
    s.add_argument("--batch-size", type=int, default=None, help="default 16")
    s.add_argument("--seed", type=int, default=None, help="default 0 (config: run.seed)")
    s.add_argument("--limit", type=int, default=None, help="first N items only (default: all)")
    s.add_argument("--extraction", choices=["strict", "reference"], default=None, help="default strict")
    s.add_argument("--out", default=None, help="results go to OUT/<task>-<mode>/ (default runs/eval/<model>)")
    s.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. model.dtype=float32")
    s.set_defaults(func=_cmd_eval)

    s = sub.add_parser("report", help="markdown report with plots for one run or several")
    s.add_argument("runs", nargs="+")
    s.add_argument("--out", default="")
    s.set_defaults(func=_cmd_report)

    s = sub.add_parser("convert", help="convert between the reference TinyLLaVA layout and tinyvr's")
    s.add_argument("src")
    s.add_argument("dst")
    s.add_argument("--to", choices=["tinyvr", "reference"], default="tinyvr")
    s.set_defaults(func=_cmd_convert)

    s = sub.add_parser("estimate-memory", help="estimate per-GPU memory of a training config")
    s.add_argument("--config", required=True)
    s.add_argument("--gpus", type=int, default=8)
    s.add_argument("--zero", type=int, default=3, choices=[0, 1, 2, 3])
    s.add_argument("--gpu-gb", type=float, default=80.0)
    s.add_argument("overrides", nargs="*")
    s.set_defaults(func=_cmd_estimate_memory)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # dotted overrides may come after options (`--config x.yaml rl.beta=0`): argparse leaves those
    # to parse_known_args, and they join the positional ones here
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any("=" not in e or e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides or []) + extra
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line unless --debug
        from tinyvr.errors import TinyVRError

        if args.debug:
            raise
        if isinstance(e, TinyVRError):
            print(f"error: {e}", file=sys.stderr)
        elif isinstance(e, (FileNotFoundError, IsADirectoryError, PermissionError)):
            print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        else:
            print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
