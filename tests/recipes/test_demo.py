"""`tinyvr demo` end to end at toy size: every stage, the 12 evaluations, results.json, report, rerun."""

import json
import shutil

import yaml

from tinyvr.utils.device import cpu_cores

from tests.recipes.conftest import SIZES

TOY = ["optim.max_steps=2", "optim.batch_size=2", "rollout.num_generations=2", "rollout.max_new_tokens=8",
       "eval.max_new_tokens=8", "eval.batch_size=4", "run.progress=false", "run.tensorboard=false"]
NUMBERS = {"step", "loss", "reward", "kl", "completion_length"}  # a GRPO metrics row's numbers (its timings left out)


def test_demo_runs_every_stage_writes_results_and_report_reuses_them_and_adds_ablations(tmp_path, monkeypatch):
    from tinyvr.recipes import demo
    from tinyvr.recipes.demo import run_demo

    out = tmp_path / "demo"
    report = run_demo(out=str(out), overrides=TOY + ["sft:optim.lr=0.00123"], eval_limit=3, sizes=dict(SIZES))
    lrs = {s: yaml.safe_load((out / s / "config.yaml").read_text())["optim"]["lr"] for s in ("pretrain", "sft", "grpo")}
    assert lrs["sft"] == 0.00123 and lrs["pretrain"] != 0.00123 and lrs["grpo"] != 0.00123
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"sft", "coldstart", "r1"}
    for stage in results.values():
        assert set(stage) == {"test", "test_heldout"}
        for split in stage.values():
            assert set(split) == {"option", "reason"}
            assert all(0.0 <= v <= 1.0 for v in split.values())
    for stage in ("pretrain", "sft", "coldstart", "grpo"):
        assert (out / stage / "model" / "DONE").is_file()
        assert [r["step"] for r in map(json.loads, (out / stage / "metrics.jsonl").read_text().splitlines())] == [1, 2]
    md = report.read_text()
    # the paper-style table leads, then the per-run material
    assert md.index("| Model | Answer type | test | test_heldout |") < md.index("## Runs")
    assert "| TinyLLaVA-Video-R1 (tiny) | Reason |" in md and "mean thinking length" in md
    for png in ("report_eval.png", "report_training.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in md
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sizes"]["sft"] == SIZES["sft"]
    # GRPO's headroom: the cold start's 8 sampled answers per held-out item against its greedy one
    head = summary["headroom"]
    assert head["greedy"] == results["coldstart"]["test_heldout"]["reason"] and head["samples"] == 8
    assert 0.0 <= head["pass@1"] <= head["pass@8"] <= 1.0 and 0.0 <= head["maj@8"] <= head["pass@8"]
    preds = (out / "eval" / "coldstart" / "test_heldout-reason-k8" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 3 and all(len(json.loads(p)["samples"]) == 8 for p in preds)
    assert "## GRPO headroom" in md and f"| {100 * head['greedy']:.1f} | {100 * head['pass@1']:.1f} |" in md
    # GRPO against its cold start: one seed without --ablations, so no spread and no verdict yet
    gain = summary["grpo_gain"]
    assert gain["coldstart"]["acc"] == results["coldstart"]["test_heldout"]["reason"]
    assert gain["r1_seed_accs"] == [results["r1"]["test_heldout"]["reason"]] and gain["beats_spread"] is None
    assert "## Does GRPO beat its cold start?" in md and "`tinyvr demo --seeds 3`" in md
    # and sampled as the reference evaluates: R1's own 8 answers per held-out item, against the cold start's
    sampled = gain["sampled"]
    assert sampled["coldstart"] == head["pass@1"] and sampled["samples"] == 8 and sampled["beats_spread"] is None
    r1_k8 = json.loads((out / "eval" / "r1" / "test_heldout-reason-k8" / "results.json").read_text())
    assert sampled["r1_seed_accs"] == [r1_k8["sampling"]["pass@1"]]
    assert [(c["seed"], c["items"]) for c in sampled["items"]] == [(0, 3)]
    assert "**Sampled, as the reference evaluates** (here temperature 1.0, top-k 50;" in md and "seed 0: " in md

    # a second run reuses every finished stage and evaluation: same numbers, no retraining; with
    # --seeds 2, R1 is trained once more (seed 1) and the verdict gets a spread, without ablations
    weights = {s: (out / s / "model" / "model.safetensors").stat().st_mtime_ns for s in ("sft", "grpo")}
    run_demo(out=str(out), overrides=TOY, eval_limit=3, sizes=dict(SIZES), seeds=2)
    assert json.loads((out / "results.json").read_text()) == results
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ablations"] is None and sorted(p.name for p in (out / "ablations").iterdir()) == ["full-seed1"]
    assert {s: (out / s / "model" / "model.safetensors").stat().st_mtime_ns for s in weights} == weights
    gain = summary["grpo_gain"]
    seed1 = json.loads((out / "ablations" / "full-seed1" / "eval" / "test_heldout-reason" / "results.json").read_text())
    assert gain["r1_seed_accs"] == [results["r1"]["test_heldout"]["reason"], seed1["scores"]["Avg"]]
    assert gain["beats_spread"] == (gain["gain"] > gain["r1_std"])
    # and item by item, each seed's R1 against the cold start on the same 3 held-out items
    assert [(c["seed"], c["items"]) for c in gain["items"]] == [(0, 3), (1, 3)]
    assert all(c["gained"] + c["lost"] <= 3 for c in gain["items"])
    md = (out / "report.md").read_text()
    assert "Item by item against the cold start (3 items): seed 0: " in md and "; seed 1: " in md
    assert "(2 seeds)" in md and "## Ablations" not in md and "`tinyvr demo --seeds 3`" not in md
    assert "Started from a fresh, random tiny model" in md and summary["start"] == {"foundation": None}
    seed1_k8 = json.loads((out / "ablations" / "full-seed1" / "eval" / "test_heldout-reason-k8" / "results.json")
                          .read_text())
    assert gain["sampled"]["r1_seed_accs"] == [r1_k8["sampling"]["pass@1"], seed1_k8["sampling"]["pass@1"]]
    assert gain["sampled"]["beats_spread"] == (gain["sampled"]["gain"] > gain["sampled"]["r1_std"])

    # --jobs 2: the same two GRPO runs side by side in worker processes, one thread each on this
    # 2-core machine, each logging to its own train.log; same numbers as one after the other
    par = tmp_path / "demo_jobs"
    shutil.copytree(out, par, ignore=shutil.ignore_patterns("grpo", "ablations", "r1", "*.json", "*.md"))
    run_demo(out=str(par), overrides=TOY + ["sft:optim.lr=0.00123"], eval_limit=3, sizes=dict(SIZES), seeds=2, jobs=2)
    threads = max(1, cpu_cores() // 2)
    for seq_run, par_run in ((out / "grpo", par / "grpo"),
                             (out / "ablations" / "full-seed1", par / "ablations" / "full-seed1")):
        assert (par_run / "model" / "DONE").is_file() and "grpo" in (par_run / "train.log").read_text()
        assert yaml.safe_load((par_run / "config.yaml").read_text())["run"]["threads"] == threads
        rows = [[{k: v for k, v in json.loads(line).items() if k in NUMBERS}
                 for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (seq_run, par_run)]
        assert rows[0] == rows[1] and len(rows[0]) == 2 and all(set(r) == NUMBERS for r in rows[0])
    assert json.loads((par / "summary.json").read_text())["grpo_gain"]["r1_seed_accs"] == gain["r1_seed_accs"]

    # with --ablations (two of the variants here, to keep it short) over the same 2 seeds, only the
    # variants are trained: the full recipe's seeds are the runs above
    monkeypatch.setattr(demo, "ABLATIONS", {"full": [], "no_noise": ["rl.noise_std=0.0"]})
    seed1_weights = (out / "ablations" / "full-seed1" / "model" / "model.safetensors").stat().st_mtime_ns
    run_demo(out=str(out), overrides=TOY, eval_limit=3, sizes=dict(SIZES), ablations=True, seeds=2)
    assert json.loads((out / "results.json").read_text()) == results
    summary = json.loads((out / "summary.json").read_text())
    assert summary["headroom"] == head
    assert {s: (out / s / "model" / "model.safetensors").stat().st_mtime_ns for s in weights} == weights
    assert (out / "ablations" / "full-seed1" / "model" / "model.safetensors").stat().st_mtime_ns == seed1_weights
    assert not (out / "ablations" / "full-seed0").exists()  # seed 0 of the full recipe is the R1 stage
    abl = summary["ablations"]
    assert set(abl) == {"full", "no_noise"} and all(len(a["acc"]) == 2 for a in abl.values())
    assert abl["full"]["acc"] == gain["r1_seed_accs"]
    for s in (0, 1):
        r = json.loads((out / "ablations" / f"no_noise-seed{s}" / "eval" / "test_heldout-reason" / "results.json")
                       .read_text())
        assert r["scores"]["Avg"] == abl["no_noise"]["acc"][s] and r["card"]["seed"] == s
    assert yaml.safe_load((out / "ablations" / "no_noise-seed1" / "config.yaml").read_text())["rl"]["noise_std"] == 0.0
    gain = summary["grpo_gain"]
    assert gain["r1_seed_accs"] == abl["full"]["acc"] and gain["beats_spread"] == (gain["gain"] > gain["r1_std"])
    md = (out / "report.md").read_text()
    assert "## Ablations" in md and "| no_noise |" in md and "(2 seeds)" in md and "`tinyvr demo --seeds 3`" not in md


def test_demo_refuses_data_from_another_generator_seed_or_size(tmp_path):
    import pytest

    from tinyvr.data.synthetic.writer import GENERATOR_VERSION
    from tinyvr.errors import ConfigError
    from tinyvr.recipes.demo import run_demo

    out = tmp_path / "demo"
    (out / "data").mkdir(parents=True)
    manifest = out / "data" / "manifest.json"
    good = {"generator": GENERATOR_VERSION, "seed": 0, "sizes": dict(SIZES), "counts": dict(SIZES)}
    for bad, named in ((dict(good, generator="tinyvr-synthetic-1"), "generator: 'tinyvr-synthetic-1'"),
                       (dict(good, seed=3), "seed: 3 (this run: 0)"),
                       (dict(good, sizes=dict(SIZES, sft=SIZES["sft"] + 1)), "sizes.sft")):
        manifest.write_text(json.dumps(bad))
        with pytest.raises(ConfigError) as e:
            run_demo(out=str(out), overrides=TOY, eval_limit=3, sizes=dict(SIZES))
        assert str(manifest) in str(e.value) and named in str(e.value) and "--fresh" in str(e.value)
    assert not (out / "init").exists()  # stopped before building anything


def test_grpo_verdict_splits_accuracy_into_format_answers_and_letter_prior_and_compares_the_gain_with_the_spread():
    from tinyvr.recipes.demo import _verdict_section, grpo_verdict

    # cold start: 7.0%, 43% parse, 16.3% of those right; R1: 20.0%, 80% parse, 25.0% right, "B" for 150 of 160
    cold = {"acc": 0.07, "counts": {"total": 200, "correct": 14, "unparseable": 114},
            "answers": {"A": 30, "C": 26, "D": 30}}
    r1 = {"acc": 0.2, "counts": {"total": 200, "correct": 40, "unparseable": 40}, "answers": {"B": 150, "D": 10}}
    v = grpo_verdict(cold, r1, [0.20, 0.16, 0.18])
    assert v["coldstart"] == {"acc": 0.07, "parseable": 0.43, "acc_parsed": 14 / 86, "top_answer": "D",
                              "top_share": 30 / 86}  # a tie goes to the later letter, deterministically
    assert v["r1"] == {"acc": 0.2, "parseable": 0.8, "acc_parsed": 0.25, "top_answer": "B", "top_share": 150 / 160}
    assert abs(v["r1_mean"] - 0.18) < 1e-12 and abs(v["r1_std"] - 0.02) < 1e-12
    assert abs(v["gain"] - 0.11) < 1e-12 and v["beats_spread"] is True
    md = _verdict_section(v)
    assert "| accuracy | 7.0 | 18.0 ± 2.0 (3 seeds) |" in md and "| answers that parse | 43.0 | 80.0 |" in md
    assert "| most common answer (share of parsed) | D (35%) | B (94%) |" in md
    assert "+11.0 points" in md and "is above the spread" in md
    # a gain inside the spread is reported as such
    v = grpo_verdict(cold, r1, [0.05, 0.12, 0.10])
    assert v["beats_spread"] is False and "not above the spread" in _verdict_section(v)
    # nothing parsed (or results from before answers were counted): zero rates and no letter, not an error
    none = grpo_verdict({"acc": 0.0, "counts": {"total": 5, "correct": 0, "unparseable": 5}}, r1, [0.1])["coldstart"]
    assert none["acc_parsed"] == 0.0 and none["top_answer"] is None


def test_item_changes_count_the_items_grpo_gained_and_lost_with_a_sign_test(tmp_path):
    import json

    import pytest

    from tinyvr.errors import TinyVRError
    from tinyvr.recipes.demo import _verdict_section, grpo_verdict, item_changes

    def write(folder, correct):
        folder.mkdir(parents=True)
        (folder / "predictions.jsonl").write_text(
            "".join(json.dumps({"id": f"q{i}", "correct": c}) + "\n" for i, c in enumerate(correct)))

    # 10 items: right before and after 2, gained 6 (items 2-7), lost 1 (item 8), wrong both times 1
    write(tmp_path / "cold", [1, 1, 0, 0, 0, 0, 0, 0, 1, 0])
    write(tmp_path / "r1", [1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
    c = item_changes(tmp_path / "cold", tmp_path / "r1", seed=3)
    assert (c["seed"], c["gained"], c["lost"], c["items"]) == (3, 6, 1, 10)
    assert c["p"] == pytest.approx(8 / 128)  # P(at least 6 of 7 fair coin flips)
    back = item_changes(tmp_path / "r1", tmp_path / "cold", seed=3)
    assert (back["gained"], back["lost"]) == (1, 6) and back["p"] > 0.9
    cold = {"acc": 0.3, "counts": {"total": 10, "correct": 3, "unparseable": 0}, "answers": {"A": 10}}
    v = grpo_verdict(cold, cold, [0.8])
    v["items"] = [c]
    assert "seed 3: 6 gained, 1 lost (sign test p 0.06)" in _verdict_section(v)
    write(tmp_path / "other", [1, 0, 1])
    with pytest.raises(TinyVRError, match="not those of"):
        item_changes(tmp_path / "cold", tmp_path / "other", seed=0)


def test_sampled_verdict_pairs_each_seeds_items_with_the_cold_starts_and_compares_the_gain_with_the_spread(tmp_path):
    import pytest

    from tinyvr.errors import TinyVRError
    from tinyvr.recipes.demo import _sampled_section, sampled_verdict

    def write(name, right):  # right answers among 4 samples, item by item
        folder = tmp_path / name
        folder.mkdir()
        (folder / "predictions.jsonl").write_text("".join(
            json.dumps({"id": f"q{i}", "samples": ["A"] * 4, "samples_correct": c}) + "\n" for i, c in enumerate(right)))
        return folder

    cold = write("cold", [0, 1, 2, 4])            # 7 of 16 right: 43.75%
    seed0 = write("r1-0", [1, 2, 2, 4])           # +1/4, +1/4, 0, 0 -> mean +12.5
    seed1 = write("r1-1", [2, 1, 3, 4])           # +2/4, 0, +1/4, 0 -> mean +18.75
    (cold / "results.json").write_text(json.dumps({"card": {"decoding": {"temperature": 0.7, "top_k": 5}}}))
    v = sampled_verdict(cold, [seed0, seed1], [0, 1])
    assert v["samples"] == 4 and v["coldstart"] == pytest.approx(7 / 16)
    assert (v["temperature"], v["top_k"]) == (0.7, 5)
    assert v["r1_seed_accs"] == pytest.approx([9 / 16, 10 / 16])
    assert v["gain"] == pytest.approx(2.5 / 16) and v["r1_std"] == pytest.approx(0.0625 / 2 ** 0.5)
    assert v["beats_spread"] is True
    assert v["items"][0]["diff"] == pytest.approx(0.125)
    assert v["items"][0]["se"] == pytest.approx(0.14433756729740643 / 2)  # stdev of (.25, .25, 0, 0) / sqrt(4)
    md = _sampled_section(v)
    assert "(here temperature 0.7, top-k 5;" in md
    assert "| sampled accuracy (pass@1) | 43.8 | 59.4 ± 4.4 (2 seeds) |" in md
    assert "by +15.6 points (mean of 2 seeds)" in md and "is above the spread" in md
    assert "seed 0: +12.5 ± 7.2; seed 1: +18.8 ± 12.0" in md
    one = sampled_verdict(cold, [cold], [0])
    assert one["gain"] == 0.0 and one["beats_spread"] is None and "with one seed" in _sampled_section(one)
    with pytest.raises(TinyVRError, match="not those of"):
        sampled_verdict(cold, [write("short", [1, 2])], [0])
    greedy = tmp_path / "greedy"
    greedy.mkdir()
    (greedy / "predictions.jsonl").write_text(json.dumps({"id": "q0", "correct": True}) + "\n")
    with pytest.raises(TinyVRError, match="sampled answers"):
        sampled_verdict(greedy, [cold], [0])


def test_stage_overrides_reach_their_stage_only_and_a_bad_stage_is_refused_by_name():
    import pytest

    from tinyvr.errors import ConfigError
    from tinyvr.recipes.demo import DEMO_SIZES, demo_sizes, split_stage_overrides

    common, per_stage = split_stage_overrides(["run.threads=1", "sft:optim.lr=1e-4", "grpo:optim.max_steps=5",
                                               "sft:optim.epochs=2", "model.init_from=runs/a:b"])
    assert common == ["run.threads=1", "model.init_from=runs/a:b"]  # a ':' in a value is not a stage
    assert per_stage == {"sft": ["optim.lr=1e-4", "optim.epochs=2"], "grpo": ["optim.max_steps=5"]}
    with pytest.raises(ConfigError, match="'sfx:optim.lr=1'.*no stage 'sfx'.*pretrain, sft, coldstart, grpo"):
        split_stage_overrides(["sfx:optim.lr=1"])
    # --sizes names some splits; the others keep the demo's sizes for the model it starts from
    assert demo_sizes("runs/f", {"sft": 72000}) == {**demo_sizes("runs/f"), "sft": 72000}
    assert demo_sizes("runs/f", {"test": 9}, full=True) == {**demo_sizes("runs/f", full=True), "test": 9}
    assert demo_sizes("", {"rl": 5, "test": 7}) == {**DEMO_SIZES, "rl": 5, "test": 7}


def test_demo_refuses_fewer_than_one_job_before_building_anything(tmp_path):
    import pytest

    from tinyvr.errors import ConfigError
    from tinyvr.recipes.demo import run_demo

    with pytest.raises(ConfigError, match="--jobs must be at least 1, got 0"):
        run_demo(out=str(tmp_path / "demo"), overrides=TOY, seeds=2, jobs=0)
    assert not (tmp_path / "demo").exists()


def test_a_failed_parallel_grpo_run_is_reported_with_its_log_after_the_others_finish(tmp_path):
    import pytest

    from tinyvr.errors import TinyVRError
    from tinyvr.recipes.demo import PACKAGED_CONFIGS, train_in_parallel

    good, bad = tmp_path / "good", tmp_path / "bad"
    (good / "model").mkdir(parents=True)  # a finished run is skipped, not trained again
    (good / "model" / "config.json").write_text("{}")
    (good / "model" / "DONE").write_text("1\n")
    with pytest.raises(TinyVRError) as e:
        train_in_parallel(PACKAGED_CONFIGS, [("full", 0, good, []),
                                             ("full", 1, bad, [f"run.output_dir={bad}", "optim.lr=fast"])], jobs=2)
    assert "full seed 1" in str(e.value) and str(bad / "train.log") in str(e.value)
    assert "optim.lr" in (bad / "train.log").read_text()
    assert not (good / "train.log").exists()
