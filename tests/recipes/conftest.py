"""Session fixtures for recipe tests: a tiny real dataset (mp4 files) and a tiny model folder."""

import pytest

SIZES = {"pretrain": 8, "sft": 8, "rl": 8, "test": 6, "test_heldout": 6, "coldstart": 16}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from tinyvr.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, seed=0, sizes=SIZES, workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from tinyvr.recipes.common import init_model_folder

    return init_model_folder("tiny", tmp_path_factory.mktemp("init") / "model", seed=0)


def stage_cfg(stage, out, init, data, *extra):
    from tinyvr.config import load_config

    train_file = {"pretrain": "pretrain.json", "sft": "sft.json", "coldstart": "coldstart-16.json",
                  "grpo": "rl.jsonl"}[stage]
    return load_config(f"configs/tiny/{stage}.yaml", [
        f"run.output_dir={out}", f"model.init_from={init}", f"data.train_file={data / train_file}",
        f"data.video_root={data}", "data.eval_file=", "run.progress=false", "run.tensorboard=false",
        *extra])
