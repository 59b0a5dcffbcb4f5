import pytest

from tinyvr.config import TrainConfig, load_config, save_config
from tinyvr.errors import ConfigError


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yaml_base_merge_and_overrides(tmp_path):
    write(tmp_path, "base.yaml", "stage: grpo\nrl:\n  beta: 0.02\n  noise_std: 0.0\noptim:\n  lr: 1.0e-6\n")
    child = write(tmp_path, "child.yaml", "base: base.yaml\nrl:\n  beta: 0.05\n")
    cfg = load_config(child, ["rl.kl_estimator=k1", "optim.scheduler=cosine", "run.seed=7"])
    assert cfg.stage == "grpo"
    assert cfg.rl.beta == 0.05  # child wins
    assert cfg.rl.noise_std == 0.0  # inherited
    assert cfg.rl.kl_estimator == "k1"
    assert cfg.optim.scheduler == "cosine" and cfg.optim.lr == 1e-6
    assert cfg.run.seed == 7


def test_round_trip(tmp_path):
    cfg = load_config(None, ["rl.beta=0.0", "model.trainable=[connector]"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert isinstance(again, TrainConfig)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["rl.bta=0.1"], "'bta' is not a field"),
        (["rollout.num_generations=1"], "rollout.num_generations"),
        (["optim.lr=-1e-5"], "optim.lr"),
        (["optim.lr=abc"], "optim.lr: expected a number"),
        (["rl.kl_estimator=k9"], "'k9' is not allowed"),
        (["model.trainable=[tower]"], "model.trainable[0]"),
        (["model.num_frames=-1"], "model.num_frames"),
        (["run.progress=yes please"], "run.progress: expected true/false"),
        (["stage=finetune"], "'finetune' is not allowed"),
        (["noequals"], "must look like"),
        (["rl.num_iterations=2", "rl.eps_low=0", "rl.eps_high=0"], "clipping range"),
        (["rollout.num_generations=4", "rollout.greedy_generations=4"], "rollout.greedy_generations: 4 must be below"),
        (["rollout.greedy_generations=-1"], "rollout.greedy_generations"),
    ],
)
def test_bad_values_name_the_field(overrides, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert needle in str(e.value)


def test_unknown_key_in_file(tmp_path):
    p = write(tmp_path, "x.yaml", "rl:\n  betaa: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'rl.betaa'") as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: ") and "\n" not in str(e.value)  # names the file, one line
    # a mistake made on the command line is not blamed on the file
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "ok.yaml", "rl:\n  beta: 0.1\n"), ["rl.betaa=1"])
    assert "ok.yaml" not in str(e.value) and "betaa" in str(e.value)


def test_eval_task_is_checked(tmp_path):
    assert load_config(None, ["eval.task=mvbench"]).eval.task == "mvbench"
    with pytest.raises(ConfigError, match="eval.task: unknown task 'mvbenchh'"):
        load_config(None, ["eval.task=mvbenchh"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = write(tmp_path, "bad.yaml", "rl: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
