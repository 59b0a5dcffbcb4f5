"""Bad configs are refused before anything runs, naming the field; the CLI turns every such error
into one `error:` line and exit status 2 (a traceback only with --debug)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyvr.cli import main
from tinyvr.config import load_config
from tinyvr.errors import ConfigError

BAD_OVERRIDES = [  # (override, words the error must contain)
    ("rollout.num_generations=1", "rollout.num_generations: 1 is out of range (must be >= 2)"),
    ("rollout.num_generations=0", "rollout.num_generations"),
    ("optim.lr=-1", "optim.lr: -1.0 is out of range (must be > 0.0)"),
    ("optim.lr=0", "optim.lr"),
    ("optim.lr=.nan", "optim.lr: nan is not a finite number"),
    ("optim.lr=nan", "optim.lr: nan is not a finite number"),
    ("rl.beta=.inf", "rl.beta: inf is not a finite number"),
    ("model.num_frames=-1", "model.num_frames: -1 is out of range"),
    ("model.num_frames=8.5", "model.num_frames: expected an integer"),
    ("optim.batch_size=0", "optim.batch_size"),
    ("optim.batch_size=two", "optim.batch_size: expected an integer"),
    ("data.max_bad_fraction=1.5", "data.max_bad_fraction"),
    ("rollout.top_p=0", "rollout.top_p"),
    ("run.tensorboard=maybe", "run.tensorboard: expected true/false"),
    ("optim.scheduler=exponential", "'exponential' is not allowed"),
    ("optim.betas=[0.9]", "optim.betas"),
    ("optim.lrr=1e-5", "'lrr' is not a field of optim"),
    ("nosuchsection.x=1", "'nosuchsection' is not a field"),
    ("rl.reward=tinyllava", "rl.reward: unknown reward 'tinyllava'"),
    ("rl.reward=os.system('ls'):x", "rl.reward: unknown reward"),
    ("rl.extra_rewards=[format, 'my mod:f']", "rl.extra_rewards[1]"),
]


@pytest.mark.parametrize("override,needle", BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_bad_override_names_the_field(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config("configs/tiny/grpo.yaml", [override])
    assert needle in str(e.value), str(e.value)


def test_values_that_look_odd_but_are_fine():
    cfg = load_config("configs/tiny/sft.yaml", ["optim.lr=1e-5", "model.num_frames=0", "rl.reward=mypkg.rewards:score"])
    assert cfg.optim.lr == 1e-5  # YAML 1.1 reads "1e-5" as a string; a float field accepts it
    assert cfg.model.num_frames == 0  # 0 = the model's own frame count (read_video refuses 0 itself)
    assert cfg.rl.reward == "mypkg.rewards:score"  # checked for shape only; imported when the run starts


FILE_FAULTS = [  # (yaml text, words the error must contain)
    ("optim:\n  lr: 1.0e-5\n  warmup: 3\n", "unknown config key 'optim.warmup'"),
    ("typo_section:\n  a: 1\n", "unknown config key 'typo_section'"),
    ("optim:\n  lr: fast\n", "optim.lr: expected a number"),
    ("optim: 3\n", "optim: expected a mapping"),
    ("rollout:\n  num_generations: 1\n", "rollout.num_generations"),
    ("model:\n  trainable: [vision_tower, vision_tower]\n", "lists a part twice"),
    ("- just\n- a list\n", "top level must be a mapping"),
    ("optim:\n  lr: [unclosed\n", "not valid YAML"),
    ("stage: grpo\nrun: !!python/object/apply:os.system ['touch {marker}']\n", "not valid YAML"),
    ("base: missing_parent.yaml\n", "config file not found"),
]


@pytest.mark.parametrize("text,needle", FILE_FAULTS, ids=[n for _, n in FILE_FAULTS])
def test_bad_config_file_names_the_key(tmp_path, text, needle):
    marker = tmp_path / "pwned"
    path = tmp_path / "run.yaml"
    path.write_text(text.format(marker=marker))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert needle in str(e.value), str(e.value)
    assert not marker.exists()  # safe_load: YAML tags never construct Python objects


def test_base_cycle_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_override_value_is_never_executed(tmp_path):
    """An override is parsed as a YAML scalar with safe_load; a tag it refuses stays a plain string."""
    marker = tmp_path / "pwned"
    with pytest.raises(ConfigError, match="rl.reward: unknown reward"):
        load_config(None, [f"rl.reward=!!python/object/apply:os.system ['touch {marker}']"])
    cfg = load_config(None, [f"run.name=!!python/object/apply:os.system ['touch {marker}']"])
    assert cfg.run.name.startswith("!!python/object") and not marker.exists()


# -- the CLI: one line, exit 2, no traceback ---------------------------------------------------------


@pytest.mark.parametrize("argv,needle", [
    (["train", "grpo", "--config", "configs/tiny/grpo.yaml", "rollout.num_generations=1"], "rollout.num_generations"),
    (["train", "sft", "--config", "configs/tiny/sft.yaml", "optim.lr=-1"], "optim.lr"),
    (["validate", "--config", "configs/tiny/sft.yaml", "model.num_frames=-2"], "model.num_frames"),
    (["validate", "--config", "configs/tiny/sft.yaml", "optim.nope=1"], "'nope' is not a field"),
    (["validate", "--config", "configs/tiny/no_such.yaml"], "config file not found"),
    (["train", "grpo", "--config", "configs/tiny/sft.yaml"], "stage is 'sft'"),
])
def test_cli_prints_one_error_line_and_exits_2(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert "Traceback" not in "\n".join(err)


def test_cli_debug_shows_the_exception(capsys):
    with pytest.raises(ConfigError, match="optim.lr"):
        main(["--debug", "validate", "--config", "configs/tiny/sft.yaml", "optim.lr=-1"])


def test_cli_unknown_key_in_a_file(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(f"base: {Path('configs/tiny/sft.yaml').resolve()}\noptim:\n  max_stepz: 3\n")
    assert main(["train", "sft", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: unknown config key 'optim.max_stepz'; valid keys here:")
