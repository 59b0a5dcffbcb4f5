"""`tinyvr validate`: config and data faults are found and named before any training starts."""

from __future__ import annotations

import json
import shutil

import pytest

from tinyvr.cli import main
from tinyvr.errors import CheckpointError, ConfigError, DataError
from tinyvr.recipes.validate import validate_run


@pytest.fixture
def grpo_files(data_root, tiny_data, fault_videos):
    """rl.jsonl's 4 good rows + a malformed row (line 5) + a row whose video is corrupt (line 6)."""
    shutil.copy(fault_videos["truncated_mp4"], data_root / "broken.mp4")
    lines = (tiny_data / "rl.jsonl").read_text().splitlines()
    bad_row = json.loads(lines[0])
    del bad_row["solution"]
    corrupt = dict(json.loads(lines[1]), video_filename="./broken.mp4")
    path = data_root / "train.jsonl"
    path.write_text("\n".join(lines + [json.dumps(bad_row), json.dumps(corrupt)]) + "\n")
    return path


def grpo_args(tiny_model, data_root, train_file, *extra):
    return [f"model.init_from={tiny_model}", f"data.train_file={train_file}", f"data.video_root={data_root}",
            "data.eval_file=", *extra]


def test_validate_names_the_bad_row_and_the_bad_video(grpo_files, data_root, tiny_model):
    report = validate_run("configs/tiny/grpo.yaml",
                          grpo_args(tiny_model, data_root, grpo_files, "data.max_bad_fraction=0.5"))
    assert "5 rows read, 1 malformed, 1 undecodable videos" in report
    assert f"{grpo_files}:5: field 'solution': missing" in report
    assert f"{data_root / 'broken.mp4'}: corrupt or not a video" in report


def test_validate_fails_past_max_bad_fraction(grpo_files, data_root, tiny_model, capsys):
    args = grpo_args(tiny_model, data_root, grpo_files)  # default max_bad_fraction 0.05; 2 of 6 are bad
    with pytest.raises(DataError, match=r"2 of 6 samples are bad \(33.3%\), more than data.max_bad_fraction=0.05"):
        validate_run("configs/tiny/grpo.yaml", args)
    assert main(["validate", "--config", "configs/tiny/grpo.yaml", *args]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: {grpo_files}: 2 of 6 samples are bad (33.3%), more than data.max_bad_fraction=0.05"
    assert any(f"{grpo_files}:5" in line for line in err) and any("broken.mp4" in line for line in err)
    assert "Traceback" not in "\n".join(err)


def test_validate_cli_ok_and_data_flag(grpo_files, data_root, tiny_model, tiny_data, capsys):
    args = grpo_args(tiny_model, data_root, tiny_data / "missing.jsonl")  # --data replaces it
    assert main(["validate", "--config", "configs/tiny/grpo.yaml", "--data", str(tiny_data / "rl.jsonl"), *args]) == 0
    out = capsys.readouterr().out
    assert "config configs/tiny/grpo.yaml: ok (stage grpo)" in out and "4 rows read, 0 malformed, 0 undecodable" in out


def test_validate_reads_only_the_named_families_and_names_a_typo_before_training(data_root, tiny_data, tiny_model):
    """data.families is checked by `tinyvr validate` and by the GRPO recipe's preflight, which runs
    before the model loads: a typo fails in seconds, naming the families the file has."""
    rl = tiny_data / "rl.jsonl"
    families = [json.loads(line)["family"] for line in rl.read_text().splitlines()]
    keep = families[0]
    report = validate_run("configs/tiny/grpo.yaml", grpo_args(tiny_model, data_root, rl, f"data.families=[{keep}]"))
    assert f"{families.count(keep)} rows read, 0 malformed" in report and families.count(keep) < len(families)
    with pytest.raises(ConfigError, match=r"data.families: \['colour'\] not in .*rl.jsonl"):
        validate_run("configs/tiny/grpo.yaml", grpo_args(tiny_model, data_root, rl, "data.families=[colour]"))


def test_validate_sft_data_with_a_corrupt_video(data_root, tiny_data, tiny_model, fault_videos):
    shutil.copy(fault_videos["zero_bytes"], data_root / "empty.mp4")
    items = json.loads((tiny_data / "sft.json").read_text())
    items.append(dict(items[0], video="empty.mp4"))
    path = data_root / "sft.json"
    path.write_text(json.dumps(items))
    args = [f"model.init_from={tiny_model}", f"data.train_file={path}", f"data.video_root={data_root}",
            "data.eval_file="]
    with pytest.raises(DataError, match="1 of 5 samples are bad") as e:
        validate_run("configs/tiny/sft.yaml", args)
    assert f"{data_root / 'empty.mp4'}: empty file (0 bytes)" in str(e.value)


def test_validate_checks_model_rewards_and_eval_file(grpo_files, data_root, tiny_model, tiny_data, tmp_path):
    ok = grpo_args(tiny_model, data_root, tiny_data / "rl.jsonl")
    with pytest.raises(CheckpointError, match="model.init_from: .* is not a model folder"):
        validate_run("configs/tiny/grpo.yaml", ok + [f"model.init_from={tmp_path}"])
    # a model folder without its weights, as git leaves the tiny foundation's: named, with the way to build them
    bare = tmp_path / "foundations" / "tiny" / "model"
    shutil.copytree(tiny_model, bare, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(CheckpointError, match=r"model.init_from: .*foundations/tiny/model has no weights .*make foundation"):
        validate_run("configs/tiny/grpo.yaml", ok + [f"model.init_from={bare}"])
    other = tmp_path / "elsewhere"
    shutil.copytree(bare, other)
    with pytest.raises(CheckpointError, match=r"elsewhere has no weights \(\*\.safetensors\)$"):
        validate_run("configs/tiny/grpo.yaml", ok + [f"model.init_from={other}"])
    with pytest.raises(ConfigError, match="rl.reward: .*cannot import module 'no_such_reward_pkg'"):
        validate_run("configs/tiny/grpo.yaml", ok + ["rl.reward=no_such_reward_pkg:score"])
    with pytest.raises(ConfigError, match="data.train_file: not set"):
        validate_run("configs/tiny/grpo.yaml", ok + ["data.train_file="])
    with pytest.raises(ConfigError, match="data.video_root: .* is not a folder"):
        validate_run("configs/tiny/grpo.yaml", ok + [f"data.video_root={tmp_path / 'nope'}"])
    # the end-of-stage eval file is read as the final check will read it: a bad row fails now, not
    # after the whole run
    bad_eval = data_root / "test.jsonl"  # eval videos resolve under the eval file's own folder
    rows = (tiny_data / "test.jsonl").read_text().splitlines()
    rows[2] = json.dumps(dict(json.loads(rows[2]), solution="<answer>Z</answer>", answer="Z"))
    bad_eval.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"test.jsonl:3: field 'answer': \[synthetic\] answer 'Z' is not one of") as e:
        validate_run("configs/tiny/grpo.yaml", ok + [f"data.eval_file={bad_eval}"])
    assert str(bad_eval) in str(e.value)


def test_validate_all_rows_bad(tmp_path, tiny_model, data_root):
    path = tmp_path / "train.jsonl"
    path.write_text('{"problem": 1}\n{oops\n')
    with pytest.raises(DataError, match="no usable rows"):
        validate_run("configs/tiny/grpo.yaml", grpo_args(tiny_model, data_root, path, "data.max_bad_fraction=1.0"))


def test_validate_names_a_row_without_a_family_when_the_family_probe_is_on(data_root, tiny_data, tiny_model):
    lines = (tiny_data / "rl.jsonl").read_text().splitlines()
    row = json.loads(lines[1])
    del row["family"]
    rl = data_root / "rl_nofamily.jsonl"
    rl.write_text("\n".join([lines[0], json.dumps(row)] + lines[2:]) + "\n")
    assert "rows read" in validate_run("configs/tiny/grpo.yaml", grpo_args(tiny_model, data_root, rl,
                                                                         "data.family_probe=0"))
    with pytest.raises(ConfigError, match=r"data.family_probe: line 2 of .*rl_nofamily.jsonl has no 'family'"):
        validate_run("configs/tiny/grpo.yaml", grpo_args(tiny_model, data_root, rl, "data.family_probe=8"))
