"""`tinyvr eval --config FILE`: the file's settings drive the evaluation, flags and dotted overrides
win, mistakes are one line naming the file and key.

One tiny model folder (session fixture) and the synthetic benchmark folder of conftest; everything
runs in this process (`main([...])`), so transformers is imported once.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tinyvr.cli import build_parser, main


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_config_file_drives_eval_and_flags_override(tiny_model_dir, synthetic_root, tmp_path, generate_calls,
                                                    capsys):
    out = tmp_path / "out"
    cfg = _write_yaml(tmp_path / "eval.yaml", {
        "model": {"init_from": str(tiny_model_dir), "dtype": "float32", "attn_implementation": "eager",
                  "num_frames": 2},
        "run": {"seed": 7},
        "eval": {"task": "synthetic", "data_root": str(synthetic_root), "modes": ["option", "reason"],
                 "max_new_tokens": 6, "option_max_new_tokens": 3, "batch_size": 2, "limit": 3,
                 "extraction": "reference", "output_dir": str(out)},
    })
    assert main(["eval", "--config", str(cfg)]) == 0
    # both modes of the file, each with its own token budget, in batches of 2 (3 items: 2 + 1)
    assert generate_calls == [(2, 3), (1, 3), (2, 6), (1, 6)]
    for mode, tokens in (("option", 3), ("reason", 6)):
        r = _results(out / f"synthetic-test-{mode}")
        card = r["card"]
        assert (r["mode"], r["task"], r["counts"]["total"]) == (mode, "synthetic", 3)
        assert card["num_frames"] == 2 and card["seed"] == 7 and card["model"] == str(tiny_model_dir)
        assert card["decoding"]["max_new_tokens"] == tokens and card["decoding"]["extraction"] == "reference"
        assert card["decoding"]["greedy"] is True
        # what the loaded model really used, not an echo of the file
        assert card["dtype"] == "float32" and card["attn_implementation"] == "eager"
        assert card["batch_size"] == 2 and card["config"] == str(cfg)
    printed = capsys.readouterr().out
    assert "wrote " + str(out / "synthetic-test-reason" / "results.json") in printed
    # the answers given are printed with the scores (a model giving one letter to every item shows)
    assert printed.count('"answers": {') == 2
    assert sum(_results(out / "synthetic-test-reason")["answers"].values()) <= 3

    # flags and dotted overrides win over the file; what they do not name still comes from it
    generate_calls.reset()
    out2 = tmp_path / "out2"
    assert main(["eval", "--config", str(cfg), "--mode", "reason", "--max-new-tokens", "4", "--num-frames", "4",
                 "--batch-size", "3", "--limit", "0", "--split", "test_heldout", "--out", str(out2),
                 "model.attn_implementation=sdpa", "run.seed=3"]) == 0
    assert generate_calls == [(1, 4)]  # one mode, one held-out item, 4 tokens
    assert not (out2 / "synthetic-test_heldout-option").exists()
    r = _results(out2 / "synthetic-test_heldout-reason")
    card = r["card"]
    assert r["counts"]["total"] == 1
    assert card["num_frames"] == 4 and card["seed"] == 3 and card["decoding"]["max_new_tokens"] == 4
    assert card["decoding"]["extraction"] == "reference"  # from the file
    assert card["dtype"] == "float32" and card["attn_implementation"] == "sdpa" and card["batch_size"] == 3


def test_config_errors_are_one_line(tmp_path, capsys):
    bad = _write_yaml(tmp_path / "bad.yaml", {"model": {"init_from": "m"}, "eval": {"temprature": 0.0}})
    assert main(["eval", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: ") and "'eval.temprature'" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err

    assert main(["eval", "--config", str(bad), "eval.nope=1"]) == 2
    assert "bad.yaml" in capsys.readouterr().err  # the file's own mistake is reported first

    no_model = _write_yaml(tmp_path / "nomodel.yaml", {"eval": {"task": "synthetic", "data_root": "d"}})
    assert main(["eval", "--config", str(no_model)]) == 2
    err = capsys.readouterr().err
    assert "--model is required" in err and "model.init_from" in err and str(no_model) in err
    assert main(["eval", "--task", "mvbench", "--data-root", "d"]) == 2
    assert "--model is required" in capsys.readouterr().err
    bad_task = _write_yaml(tmp_path / "task.yaml", {"eval": {"task": "mvbenchh"}})
    assert main(["eval", "--config", str(bad_task), "--model", "m", "--data-root", "d"]) == 2
    assert "eval.task: unknown task 'mvbenchh'" in capsys.readouterr().err
    assert main(["eval", "--model", "m", "--task", "mvbench", "--data-root", "d", "--batch-size", "0"]) == 2
    assert "--batch-size 0 must be >= 1" in capsys.readouterr().err
    assert main(["eval", "--model", "m", "--task", "mvbench", "--data-root", "d", "--samples", "0"]) == 2
    assert "--samples 0 must be >= 1" in capsys.readouterr().err
    assert main(["eval", "--model", "m", "--task", "mvbench", "--data-root", "d", "--samples", "4"]) == 2
    assert "--samples 4 needs --temperature > 0" in capsys.readouterr().err


def test_shipped_eval_config_resolves():
    from tinyvr.recipes.evaluate import resolve_eval_settings

    path = "configs/tinyllava_video_r1/eval.yaml"
    st = resolve_eval_settings(build_parser().parse_args(["eval", "--config", path]))
    assert (st.model, st.task, st.data_root) == ("checkpoints/TinyLLaVA-Video-R1", "mvbench", "eval/MVBench")
    assert st.modes == ("option", "reason") and st.max_new_tokens == {"option": 8, "reason": 1024}
    assert (st.dtype, st.attn_implementation, st.num_frames) == ("bfloat16", "auto", 16)
    assert (st.temperature, st.extraction, st.batch_size, st.seed) == (0.0, "reference", 16, 0)
    assert st.out_dir("reason") == Path("runs/tinyllava_video_r1/eval/mvbench-reason")
    st = resolve_eval_settings(build_parser().parse_args(
        ["eval", "--config", path, "--task", "videomme", "--data-root", "eval/Video-MME", "--mode", "reason",
         "--max-new-tokens", "512"]))
    assert (st.task, st.data_root, st.modes, st.max_new_tokens) == (
        "videomme", "eval/Video-MME", ("reason",), {"reason": 512})
    assert st.num_frames == 16 and st.extraction == "reference"  # the rest still from the file
    # without a file: the flags and the built-in defaults (as before --config existed)
    st = resolve_eval_settings(build_parser().parse_args(["eval", "--model", "m/x", "--task", "mlvu",
                                                          "--data-root", "d"]))
    assert (st.modes, st.max_new_tokens, st.seed, st.batch_size, st.dtype) == (
        ("reason",), {"reason": 0}, 0, 16, "auto")
    assert st.out_dir("reason") == Path("runs/eval/x/mlvu-reason")
