"""configs/accelerate/: the FSDP and ZeRO-3 launch files parse (as YAML and as accelerate configs),
name wrap classes that exist in the model, and agree with the 3.6B GRPO recipe's sizes.

fsdp.yaml is wired through the environment accelerate sets from it (ACCELERATE_USE_FSDP selects
dist.strategy=fsdp; tests/recipes/test_fsdp.py tests that strategy); the DeepSpeed files are not
wired (see README, Multi-GPU): these tests keep them correct, they do not claim DeepSpeed works.
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
    """The environment `accelerate launch --config_file configs/accelerate/NAME` gives the processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(ACC / name), "-m", "tinyvr.cli", "train"])
    args, _, _ = _validate_launch_command(args)
    return prepare_multi_gpu_env(args)


@pytest.mark.parametrize("name, expected", [("fsdp.yaml", "fsdp"), ("deepspeed_zero3.yaml", "ddp")])
def test_accelerate_launch_selects_the_strategy(name, expected, monkeypatch):
    """accelerate launch with fsdp.yaml makes a dist.strategy=ddp config (the default) train with
    fsdp; the DeepSpeed file does not (DeepSpeed is not wired), and an explicit fsdp stays."""
    from tinyvr.utils.distributed import resolve_strategy

    env = _launch_env(name) if name == "fsdp.yaml" else {"ACCELERATE_USE_DEEPSPEED": "true"}
    for k in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(k, raising=False)
    assert resolve_strategy("ddp") == "ddp"
    for k, v in env.items():
        if k.startswith(("ACCELERATE_USE_", "FSDP_")):
            monkeypatch.setenv(k, v)
    assert resolve_strategy("ddp") == expected
    assert resolve_strategy("fsdp") == "fsdp"


def test_dist_strategy_config(monkeypatch):
    from tinyvr.errors import ConfigError
    from tinyvr.utils.distributed import init_distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    env = init_distributed("fsdp")  # one process: nothing to shard, the model stays whole
    assert env.strategy == "fsdp" and not env.enabled and not env.sharded
    assert load_config(None, []).dist.strategy == "ddp"
    assert load_config(None, ["dist.strategy=fsdp"]).dist.strategy == "fsdp"
    with pytest.raises(ConfigError, match="dist.strategy"):
        load_config(None, ["dist.strategy=zero3"])


def test_readme_documents_the_supported_launch():
    readme = Path("README.md").read_text()
    assert f"torchrun --standalone --nproc_per_node 8 -m tinyvr.cli train grpo --config {GRPO}" in readme
    assert f"--config {GRPO} dist.strategy=fsdp" in readme
    for name in ("fsdp.yaml", "deepspeed_zero3.yaml"):
        assert f"configs/accelerate/{name}" in readme
    assert "DeepSpeed is **not wired**" in readme
