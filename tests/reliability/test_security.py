"""Security: no pickle by default, no code from configs or data, user rewards imported only when
named, dataset paths kept inside their root (see also test_data_faults.py)."""

from __future__ import annotations

import ast
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from tinyvr.config import load_config
from tinyvr.errors import ConfigError

SRC = Path(__file__).resolve().parents[2] / "src" / "tinyvr"


@pytest.fixture
def bin_only_model(tmp_path, tiny_model):
    """The tiny model folder with its weights as a PyTorch pickle (`pytorch_model.bin`) only."""
    from safetensors.torch import load_file

    folder = tmp_path / "bin_model"
    shutil.copytree(tiny_model, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(str(tiny_model / "model.safetensors")), folder / "pytorch_model.bin")
    return folder


def test_hostile_pickle_in_a_model_folder_never_runs(bin_only_model, tmp_path):
    from tinyvr.recipes.common import load_model

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"language_model.lm_head.weight": Evil()}, bin_only_model / "pytorch_model.bin")
    with pytest.raises(Exception, match="safetensors"):  # refused before any unpickling
        load_model(bin_only_model)
    assert not marker.exists()


def test_a_pickle_only_model_folder_is_refused(bin_only_model):
    from tinyvr.recipes.common import load_model

    with pytest.raises(Exception, match="safetensors"):
        load_model(bin_only_model)


def test_saved_models_are_safetensors_only(tiny_model):
    files = {p.name for p in tiny_model.iterdir()}
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]


# -- user reward functions ----------------------------------------------------------------------------


@pytest.fixture
def user_reward_module(tmp_path, monkeypatch):
    """An importable module `tvr_user_reward` that leaves a marker file when imported."""
    marker = tmp_path / "imported"
    (tmp_path / "tvr_user_reward.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "def score(completions, solution, **columns):\n"
        "    return [1.0 for _ in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop("tvr_user_reward", None)


def test_config_names_a_user_reward_without_importing_it(user_reward_module):
    cfg = load_config("configs/tiny/grpo.yaml", ["rl.reward=tvr_user_reward:score"])
    assert cfg.rl.reward == "tvr_user_reward:score"
    assert "tvr_user_reward" not in sys.modules and not user_reward_module.exists()


def test_user_reward_is_imported_only_when_resolved(user_reward_module):
    from tinyvr.rl.rewards import get_reward_fn

    before = set(sys.modules)
    fn = get_reward_fn("tvr_user_reward:score")
    assert set(sys.modules) - before == {"tvr_user_reward"}  # that module, nothing else
    assert user_reward_module.exists() and fn(["a", "b"], ["x", "y"]) == [1.0, 1.0]


def test_registered_reward_never_imports(monkeypatch):
    import importlib

    from tinyvr.rl import rewards

    def no_import(name, *a, **k):
        raise AssertionError(f"imported {name}")

    monkeypatch.setattr(importlib, "import_module", no_import)
    for name in ("tinyllava_r1", "accuracy", "format"):
        assert callable(rewards.get_reward_fn(name))
    with pytest.raises(ConfigError, match="unknown reward"):
        rewards.get_reward_fn("os.system")  # a plain name is never an import


@pytest.mark.parametrize("name", ["../evil:f", "os.system('x'):f", "mod:", ":f", "mod:f;import os", "a b:c"])
def test_malformed_reward_paths_are_refused_by_the_config(name):
    with pytest.raises(ConfigError, match="rl.reward"):
        load_config(None, [f"rl.reward={name!s}"])


# -- no eval/exec/unsafe deserialisation anywhere in the package ------------------------------------------


UNSAFE_NAMES = {"eval", "exec", "compile", "__import__"}
UNSAFE_ATTRS = {("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"), ("pickle", "load"),
                ("pickle", "loads"), ("marshal", "loads"), ("dill", "load"), ("dill", "loads")}


def _unsafe_calls(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        f, where = node.func, f"{path.relative_to(SRC.parent)}:{node.lineno}"
        kw = {k.arg: k.value for k in node.keywords}
        if isinstance(f, ast.Name) and f.id in UNSAFE_NAMES:
            found.append(f"{where}: {f.id}()")
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            if (f.value.id, f.attr) in UNSAFE_ATTRS:
                found.append(f"{where}: {f.value.id}.{f.attr}()")
            if (f.value.id, f.attr) == ("torch", "load") and not (
                    isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                found.append(f"{where}: torch.load without weights_only=True")
            if f.attr == "load" and f.value.id in ("np", "numpy") and "allow_pickle" in kw:
                found.append(f"{where}: np.load(allow_pickle=...)")
        if "trust_remote_code" in kw and not (isinstance(kw["trust_remote_code"], ast.Constant)
                                              and kw["trust_remote_code"].value is False):
            found.append(f"{where}: trust_remote_code")
    return found


def test_package_never_evaluates_or_unpickles_untrusted_content():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    found = [hit for f in files for hit in _unsafe_calls(f)]
    assert found == []
