"""The `tinyvr` command: help without heavy imports, one-line errors, init-model and infer."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tinyvr.cli import main
from tinyvr.config import load_config

# run configs only: configs/accelerate/ holds launcher files (tests/utils/test_launch_configs.py)
# training configs (TrainConfig); the foundation recipe is a FoundationConfig, checked on its own below
CONFIGS = sorted(p for p in Path("configs").rglob("*.yaml") if "accelerate" not in p.parts and p.name != "foundation.yaml")


def test_help_is_fast_and_light():
    code = ("import sys; from tinyvr.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('transformers' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "train" in out and "demo" in out and "eval" in out
    assert out.strip().splitlines()[-1] == "False False"


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert "tinyvr 0.1.0" in capsys.readouterr().out


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p) for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.stage in ("pretrain", "sft", "coldstart", "grpo")


def test_reference_grpo_config_mirrors_the_paper():
    cfg = load_config("configs/tinyllava_video_r1/grpo.yaml")
    assert (cfg.rollout.num_generations, cfg.rollout.temperature, cfg.rollout.top_k, cfg.rollout.top_p) == (8, 1.0, 50, 1.0)
    assert cfg.rollout.max_new_tokens == 512 and cfg.rl.beta == 0.01 and cfg.rl.noise_std == 0.02
    assert cfg.rl.adv_eps == 1e-4 and cfg.rl.kl_estimator == "k3" and cfg.rl.loss_aggregation == "sequence"
    assert cfg.optim.lr == 1e-6 and cfg.optim.scheduler == "cosine" and cfg.optim.warmup_ratio == 0.03
    assert cfg.optim.max_grad_norm == 1.0 and cfg.model.trainable == ["connector", "language_model"]


def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path):
    assert main(["train", "grpo", "--config", "configs/tiny/grpo.yaml", "rl.betta=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "betta" in err and "Traceback" not in err
    assert main(["init-model", "--preset", "huge", "--out", str(tmp_path / "m")]) == 2
    assert "huge" in capsys.readouterr().err


def test_the_tiny_recipe_stops_at_once_without_the_foundation_weights_and_says_how_to_build_them(
        tmp_path, monkeypatch, capsys):
    """configs/tiny/ starts from the tiny foundation, whose folder git holds without its weights: a clone
    that has not run `make foundation` gets one line naming the field and the command, before any work."""
    import shutil

    config = Path("configs/tiny/pretrain.yaml").resolve()
    model = tmp_path / "foundations" / "tiny" / "model"
    model.mkdir(parents=True)
    shutil.copy(Path("foundations/tiny/model/config.json"), model)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "pretrain", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.init_from: foundations/tiny/model has no weights") and "make foundation" in err
    assert not (tmp_path / "runs").exists()  # nothing started


def test_init_model_and_infer(tmp_path, capsys):
    from tinyvr.data.video import write_video
    import numpy as np

    model = tmp_path / "model"
    assert main(["init-model", "--preset", "tiny", "--out", str(model)]) == 0
    assert (model / "config.json").is_file() and (model / "model.safetensors").is_file()
    assert (model / "tokenizer.json").is_file()
    video = tmp_path / "clip.mp4"
    frames = np.zeros((12, 64, 64, 3), dtype=np.uint8)
    frames[:, 20:40, 20:40, 0] = 255
    write_video(video, frames, fps=8)
    capsys.readouterr()
    args = ["infer", "--model", str(model), "--video", str(video), "--question", "What colour is the square?",
            "--options", "A. red", "B. blue", "--max-new-tokens", "5"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first  # greedy by default: same answer twice
    # a broken video is one clear line naming the file
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    assert main(["infer", "--model", str(model), "--video", str(bad), "--question", "q"]) == 2
    assert "bad.mp4" in capsys.readouterr().err

    # --config: model, decoding and frames from the file (as configs/tinyllava_video_r1/eval.yaml
    # does for the 3.6B model); flags still win
    cfg = tmp_path / "infer.yaml"
    cfg.write_text(f"model:\n  init_from: {model}\n  dtype: float32\n  num_frames: 8\n"
                   "eval:\n  temperature: 0.0\n  max_new_tokens: 5\n")
    base = ["infer", "--config", str(cfg), "--video", str(video), "--question", "What colour is the square?",
            "--options", "A. red", "B. blue"]
    assert main(base) == 0
    assert capsys.readouterr().out == first  # same model, 5 tokens, greedy: the same answer
    assert main(base + ["--max-new-tokens", "1"]) == 0
    one = capsys.readouterr().out
    assert one != first and first.startswith(one.strip())  # the flag's shorter budget won
    assert main(["infer", "--video", str(video), "--question", "q"]) == 2
    assert "--model is required" in capsys.readouterr().err


def test_foundation_flags_reach_the_recipe_config(monkeypatch, tmp_path, capsys):
    """Every `tinyvr foundation` flag lands in the FoundationConfig the recipe gets (a flag that is
    parsed but dropped would silently build another recipe than asked for)."""
    import tinyvr.recipes.foundation as foundation

    seen = {}
    monkeypatch.setattr(foundation, "build_foundation",
                        lambda out, cfg, part: seen.update(out=out, cfg=cfg, part=part) or out)
    tokenizer = tmp_path / "x" / "init"
    tokenizer.mkdir(parents=True)
    (tokenizer / "tokenizer.json").write_text("{}")  # checked to exist before the build starts
    main(["foundation", "--out", str(tmp_path), "--part", "align", "--seed", "3", "--items", "40",
          "--align-steps", "7", "--binding-formats", "which,enum", "--induction-fraction", "0",
          "--align-induction-fraction", "0.25",
          "--align-grounded-fraction", "0.6", "--align-choice-fraction", "0.4", "--align-reason-fraction", "0.3",
          "--align-question-fraction", "1", "--align-question-reason-fraction", "0.5", "--align-question-trace",
          "--tokenizer-from", str(tokenizer), "--eval-every", "400", "--threads", "1", "--model", '{"group": 4}'])
    cfg = seen["cfg"]
    assert seen["part"] == "align" and str(tmp_path) in capsys.readouterr().out
    assert (cfg.seed, cfg.items, cfg.align_steps, cfg.binding_formats, cfg.induction_fraction) == (
        3, 40, 7, ("which", "enum"), 0.0)
    assert (cfg.align_grounded_fraction, cfg.align_choice_fraction, cfg.align_reason_fraction,
            cfg.align_question_fraction, cfg.align_question_reason_fraction) == (0.6, 0.4, 0.3, 1.0, 0.5)
    assert cfg.align_question_trace is True and cfg.tokenizer_from == str(tokenizer)
    assert (cfg.threads, cfg.model_overrides, cfg.align_induction_fraction, cfg.eval_every) == (1, {"group": 4}, 0.25, 400)
    main(["foundation", "--out", str(tmp_path)])
    assert seen["cfg"].align_question_trace is False and seen["part"] == "all"


def test_foundation_recipe_file_sets_the_config_and_given_flags_win(monkeypatch, tmp_path, capsys):
    """`tinyvr foundation --config recipe.yaml`: the file's fields reach the recipe, a flag that is
    given overrides its field, and a mistake in the file is refused naming the file and the field."""
    import tinyvr.recipes.foundation as foundation

    seen = {}
    monkeypatch.setattr(foundation, "build_foundation",
                        lambda out, cfg, part: seen.update(cfg=cfg) or out)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("language_steps: 123\nbinding_formats: [which, enum]\nalign_question_fraction: 1.0\n"
                      "model_overrides: {group: 4}\n")
    main(["foundation", "--out", str(tmp_path / "f"), "--config", str(recipe), "--language-steps", "9"])
    cfg = seen["cfg"]
    assert (cfg.language_steps, cfg.binding_formats, cfg.align_question_fraction, cfg.model_overrides) == (
        9, ("which", "enum"), 1.0, {"group": 4})
    assert cfg.align_steps == foundation.FoundationConfig().align_steps  # not in the file: the default
    recipe.write_text("language_stepz: 5\n")
    assert main(["foundation", "--out", str(tmp_path / "f"), "--config", str(recipe)]) == 2
    assert re.search(r"recipe\.yaml.*language_stepz", capsys.readouterr().err)
    recipe.write_text("induction_fraction: 2.0\n")
    assert main(["foundation", "--out", str(tmp_path / "f"), "--config", str(recipe)]) == 2
    assert re.search(r"recipe\.yaml.*induction_fraction", capsys.readouterr().err)
    recipe.write_text("binding_formats: [which, riddle]\n")
    assert main(["foundation", "--out", str(tmp_path / "f"), "--config", str(recipe)]) == 2
    assert re.search(r"recipe\.yaml.*binding_formats", capsys.readouterr().err)


def test_the_shipped_foundation_recipe_is_a_valid_config():
    """configs/tiny/foundation.yaml (the README's build command) parses into a checked config."""
    from pathlib import Path

    from tinyvr.config import read_yaml
    from tinyvr.recipes.foundation import foundation_config

    path = Path(__file__).resolve().parents[1] / "configs" / "tiny" / "foundation.yaml"
    cfg = foundation_config(read_yaml(path), where=str(path))
    assert "enum" in cfg.binding_formats and cfg.align_question_reason_fraction > 0
    # the held-out checks as runs/fRo had them: every 100 steps would add about 40 min of align checks
    assert cfg.eval_every == 400 and cfg.align_steps % cfg.eval_every == 0
    # the place objectives of items 35-36: without them the video tokens keep no place
    assert cfg.vision_position_weight > 0 and cfg.align_object_weight > 0 and cfg.align_object_warmup > 0
    # item 38: the one-letter answer from the video forms in the second align cycle
    assert cfg.align_cycles >= 2 and cfg.align_cycle_connector == "fresh"
    # item 39: the compare questions (place read better) and the own question in option form from cycle 2
    assert cfg.align_grounded_compare and cfg.align_question_option_fraction == 0.0
    assert cfg.align_later_question_option_fraction == 0.3


def test_demo_starts_from_the_shipped_foundation_unless_told_and_full_sets_the_bars_setting(monkeypatch, tmp_path, capsys):
    """`tinyvr demo` with no flags starts from the repository's foundation when its weights are built
    (git does not carry them), else from a fresh model and says how to build them; `--foundation
    none`, from a fresh tiny model; `--full` asks for the configs as written (the data's default
    sizes, no quick settings) and three GRPO seeds side by side, and the flags that are given still win
    over it."""
    import tinyvr.recipes.demo as demo

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda **kw: calls.append(kw))
    shipped = tmp_path / "foundations" / "tiny"
    (shipped / "model").mkdir(parents=True)
    monkeypatch.setattr(demo, "REPO_FOUNDATION", shipped)
    main(["demo"])  # as on a fresh clone: no weights
    assert calls.pop()["foundation"] == "" and "make foundation" in capsys.readouterr().out
    (shipped / "model" / "model.safetensors").write_bytes(b"built")
    main(["demo"])
    assert calls[-1]["foundation"] == str(shipped)  # not under the working directory: shown whole
    monkeypatch.chdir(tmp_path)
    main(["demo"])
    assert calls.pop()["foundation"] == "foundations/tiny"  # under it: relative
    main(["demo", "--foundation", "none", "--sizes", "rl=50"])
    main(["demo", "--full"])
    main(["demo", "--full", "--seeds", "2", "--sizes", "sft=100,rl=9", "--foundation", "runs/f", "grpo:optim.max_steps=5"])
    default, fresh, full, given = calls
    assert (default["sizes"], default["seeds"], default["jobs"], default["full"]) == (None, 1, 1, False)
    assert fresh["foundation"] == "" and fresh["sizes"] == {"rl": 50} and not fresh["full"]
    assert (full["sizes"], full["seeds"], full["jobs"], full["full"]) == (None, 3, 3, True)
    assert default["overrides"] == [] == full["overrides"]
    assert given["overrides"] == ["grpo:optim.max_steps=5"] and given["full"]
    assert (given["sizes"], given["seeds"], given["jobs"], given["foundation"]) == ({"sft": 100, "rl": 9}, 2, 3, "runs/f")
