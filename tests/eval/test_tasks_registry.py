import sys

import pytest

from tinyvr.errors import ConfigError
from tinyvr.eval.tasks import DISPLAY_NAMES, TASKS, EvalItem, get_task


def test_registry_and_lookup_error_lists_names():
    assert set(TASKS) == {"mvbench", "videomme", "mlvu", "mmvu", "synthetic"} == set(DISPLAY_NAMES)
    assert get_task("mlvu") is TASKS["mlvu"]
    with pytest.raises(ConfigError) as e:
        get_task("mvbench2")
    assert "mvbench2" in str(e.value) and "'videomme'" in str(e.value)


def test_loaders_do_not_import_heavy_libraries():
    # task loading must stay cheap: no torch/transformers/matplotlib behind `import tinyvr.eval.tasks`
    import subprocess

    code = ("import sys, tinyvr.eval.tasks, tinyvr.eval.metrics; "
            "print(sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_item_rejects_inconsistent_fields(tmp_path):
    common = dict(id="x", task="t", video=tmp_path, question="q", answer="A")
    with pytest.raises(ValueError, match="video_kind"):
        EvalItem(video_kind="clip", options=("a", "b"), letters=("A", "B"), **common)
    with pytest.raises(ValueError, match="letters"):
        EvalItem(video_kind="video", options=("a", "b"), letters=("A",), **common)


def test_data_root_must_exist(tmp_path):
    from tinyvr.errors import DataError

    with pytest.raises(DataError, match="data root"):
        get_task("mmvu").load(tmp_path / "nope")
