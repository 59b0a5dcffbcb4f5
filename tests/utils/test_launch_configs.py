"""configs/accelerate/: the FSDP and ZeRO-3 launch files parse (as YAML and as accelerate configs),
name wrap classes that exist in the model, and agree with the 3.6B GRPO recipe's sizes.

Both are wired through the environment accelerate sets from them: ACCELERATE_USE_FSDP selects
dist.strategy=fsdp (tests/recipes/test_fsdp.py tests that strategy), ACCELERATE_USE_DEEPSPEED
selects dist.strategy=deepspeed with the ZeRO settings of the json that ACCELERATE_DEEPSPEED_CONFIG_FILE
names (tests/recipes/test_deepspeed.py tests that strategy on 2 CPU processes; the 8-GPU launch
itself is not run here).
"""

import json
from pathlib import Path

import pytest
import torch
import yaml

from tinyvr.config import load_config

ACC = Path("configs/accelerate")
GRPO = "configs/tinyllava_video_r1/grpo.yaml"


def _yaml(name):
    data = yaml.safe_load((ACC / name).read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def model_classes():
    """Class names of every module of the model (tiny preset, built on the meta device)."""
    from tinyvr.model import TinyVideoForConditionalGeneration, build_config

    with torch.device("meta"):
        model = TinyVideoForConditionalGeneration(build_config("tiny"))
    return {type(m).__name__ for m in model.modules()}, set(model._no_split_modules)


def test_fsdp_config(model_classes):
    cfg = _yaml("fsdp.yaml")
    assert cfg["distributed_type"] == "FSDP" and cfg["num_processes"] == 8 and cfg["num_machines"] == 1
    assert cfg["mixed_precision"] == "bf16"
    fsdp = cfg["fsdp_config"]
    assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    wrap = fsdp["fsdp_transformer_layer_cls_to_wrap"].split(",")
    assert wrap == ["Qwen2DecoderLayer", "SiglipEncoderLayer"]
    classes, no_split = model_classes
    assert set(wrap) <= classes and set(wrap) <= no_split  # real layers of our model, not typos
    assert fsdp["fsdp_use_orig_params"] is True  # frozen tower + trainable LLM in one model


def test_deepspeed_zero3_config_matches_the_recipe():
    cfg = _yaml("deepspeed_zero3.yaml")
    assert cfg["distributed_type"] == "DEEPSPEED" and cfg["num_processes"] == 8
    # accelerate refuses these next to a deepspeed_config_file: they belong in the json
    assert not {"mixed_precision", "gradient_accumulation_steps", "gradient_clipping", "zero_stage"} & (
        set(cfg) | set(cfg["deepspeed_config"]))
    ds_path = Path(cfg["deepspeed_config"]["deepspeed_config_file"])
    assert ds_path == ACC / "zero3.json" and ds_path.is_file()
    ds = json.loads(ds_path.read_text())
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["bf16"]["enabled"] is True and ds["fp16"]["enabled"] is False
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    recipe = load_config(GRPO)
    assert recipe.model.dtype == "bfloat16"
    assert ds["train_micro_batch_size_per_gpu"] == recipe.optim.batch_size
    assert ds["gradient_accumulation_steps"] == recipe.optim.grad_accum
    assert ds["gradient_clipping"] == recipe.optim.max_grad_norm
    assert ds["train_batch_size"] == (ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"]
                                      * cfg["num_processes"])


@pytest.mark.parametrize("name", ["fsdp.yaml", "deepspeed_zero3.yaml"])
def test_accelerate_reads_the_file(name):
    """accelerate's own loader rejects unknown keys: the files are valid for the installed version."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    cfg = load_config_from_file(str(ACC / name))
    assert cfg.num_processes == 8
    assert cfg.distributed_type == (DistributedType.FSDP if name == "fsdp.yaml" else DistributedType.DEEPSPEED)


def _launch_env(name):
    """The environment `accelerate launch --config_file configs/accelerate/NAME` gives the processes
    (what `accelerate.commands.launch.launch_command` does before it starts them)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(ACC / name), "-m", "tinyvr.cli", "train"])
    args, defaults, mp_from_config_flag = _validate_launch_command(args)
    if not args.use_deepspeed:
        return prepare_multi_gpu_env(args)
    fields = list(defaults.deepspeed_config.keys()) + (["mixed_precision"] if mp_from_config_flag else [])
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    return prepare_deepspeed_cmd_env(args)[1]


ACC_VARS = ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_CONFIG_FILE")


@pytest.mark.parametrize("name, expected", [("fsdp.yaml", "fsdp"), ("deepspeed_zero3.yaml", "deepspeed")])
def test_accelerate_launch_selects_the_strategy(name, expected, monkeypatch):
    """accelerate launch with fsdp.yaml / deepspeed_zero3.yaml makes a dist.strategy=ddp config
    (the default) train with fsdp / deepspeed; an explicit strategy in the run config stays."""
    from tinyvr.utils.distributed import resolve_strategy

    env = _launch_env(name)
    for k in ACC_VARS:
        monkeypatch.delenv(k, raising=False)
    assert resolve_strategy("ddp") == "ddp"
    for k, v in env.items():
        if k.startswith(("ACCELERATE_USE_", "FSDP_", "ACCELERATE_DEEPSPEED_")):
            monkeypatch.setenv(k, v)
    assert resolve_strategy("ddp") == expected
    assert resolve_strategy("fsdp") == "fsdp"
    assert resolve_strategy("deepspeed") == "deepspeed"


def test_accelerate_deepspeed_launch_reads_zero3_json(monkeypatch):
    """Under `accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml` the run
    takes its ZeRO settings from zero3.json (named by ACCELERATE_DEEPSPEED_CONFIG_FILE); batch
    sizes and clipping come from the run config, accumulation is tinyvr's own."""
    from tinyvr.utils.distributed import deepspeed_config, init_distributed

    env = _launch_env("deepspeed_zero3.yaml")
    assert env["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == str(ACC / "zero3.json")
    for k in ACC_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for k in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_CONFIG_FILE"):
        monkeypatch.setenv(k, env[k])
    dist_env = init_distributed("ddp")  # one process: nothing starts, the choice is recorded
    assert dist_env.strategy == "deepspeed" and dist_env.deepspeed_config == str(ACC / "zero3.json")
    assert not dist_env.deepspeed  # a single process trains the whole model
    # an explicit dist.deepspeed_config wins over the launcher's file
    assert init_distributed("deepspeed", "other.json").deepspeed_config == "other.json"
    ds = deepspeed_config(dist_env.deepspeed_config, micro_batch=1, world_size=8, max_grad_norm=1.0)
    original = json.loads((ACC / "zero3.json").read_text())
    assert ds["zero_optimization"] == original["zero_optimization"]  # the ZeRO settings as written
    assert ds["bf16"] == {"enabled": True}
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"],
            ds["gradient_clipping"]) == (1, 1, 8, 1.0)
    # on 2 ranks with 4 prompts each and no clipping: the batch keys follow (DeepSpeed checks them)
    ds = deepspeed_config(dist_env.deepspeed_config, micro_batch=4, world_size=2, max_grad_norm=0.0)
    assert (ds["train_batch_size"], ds["gradient_clipping"]) == (8, 0.0)


def test_deepspeed_config_refuses_other_stages(tmp_path):
    from tinyvr.errors import ConfigError
    from tinyvr.utils.distributed import deepspeed_config

    path = tmp_path / "zero2.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    with pytest.raises(ConfigError, match="stage 3"):
        deepspeed_config(str(path))
    with pytest.raises(ConfigError, match="cannot read"):
        deepspeed_config(str(tmp_path / "missing.json"))
    assert deepspeed_config()["zero_optimization"] == {"stage": 3}  # no file: ZeRO-3 defaults


def test_dist_strategy_config(monkeypatch):
    from tinyvr.errors import ConfigError
    from tinyvr.utils.distributed import init_distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    env = init_distributed("fsdp")  # one process: nothing to shard, the model stays whole
    assert env.strategy == "fsdp" and not env.enabled and not env.sharded
    env = init_distributed("deepspeed")
    assert env.strategy == "deepspeed" and not env.enabled and not env.deepspeed
    assert load_config(None, []).dist.strategy == "ddp"
    assert load_config(None, ["dist.strategy=fsdp"]).dist.strategy == "fsdp"
    cfg = load_config(None, ["dist.strategy=deepspeed", "dist.deepspeed_config=configs/accelerate/zero3.json"])
    assert (cfg.dist.strategy, cfg.dist.deepspeed_config) == ("deepspeed", "configs/accelerate/zero3.json")
    with pytest.raises(ConfigError, match="dist.strategy"):
        load_config(None, ["dist.strategy=zero3"])


def test_readme_documents_the_supported_launch():
    readme = Path("README.md").read_text()
    assert f"torchrun --standalone --nproc_per_node 8 -m tinyvr.cli train grpo --config {GRPO}" in readme
    assert f"--config {GRPO} dist.strategy=fsdp" in readme
    assert f"--config {GRPO} dist.strategy=deepspeed" in readme
    for name in ("fsdp.yaml", "deepspeed_zero3.yaml"):
        assert f"accelerate launch --config_file configs/accelerate/{name}" in readme
    assert "not wired" not in readme  # DeepSpeed is wired now (dist.strategy=deepspeed)
    assert "tests/recipes/test_deepspeed.py" in readme
