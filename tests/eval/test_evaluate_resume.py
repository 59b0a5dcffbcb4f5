"""Evaluation resume: an interrupted evaluation generates only the items it had not finished and
ends with the same results as an uninterrupted one (counted through a spy on generation).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


N_ITEMS, BATCH = 6, 2


@pytest.fixture
def six_items(synthetic_root):
    """The synthetic test split grown to six questions (rows copied under new ids)."""
    path = synthetic_root / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for i in range(len(rows), N_ITEMS):
        rows.append(dict(rows[i % 3], id=f"syn-{i:05d}"))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from tinyvr.recipes.evaluate import load_items

    task, items = load_items("synthetic", synthetic_root)
    assert len(items) == N_ITEMS
    return task, items


@pytest.fixture(scope="module")
def loaded_model(tiny_model_dir):
    from tinyvr.recipes.common import load_model

    model, processor = load_model(tiny_model_dir)
    return model.eval(), processor


def _comparable(folder: Path):
    r = _results(folder)
    for k in ("created", "code", "python"):
        r["card"].pop(k, None)
    return r, (folder / "predictions.jsonl").read_text()


def test_interrupted_eval_resumes_with_only_the_missing_items(loaded_model, six_items, tmp_path, generate_calls):
    from tinyvr.recipes.evaluate import evaluate

    model, processor = loaded_model
    task, items = six_items

    def run(out, kill_at=0, max_new=6):
        generate_calls.reset(kill_at)
        return evaluate(model, processor, task, items, "reason", out, max_new_tokens=max_new,
                        batch_size=BATCH, seed=0, model_name="tiny", progress=False)

    run(tmp_path / "full")
    assert generate_calls == [(BATCH, 6)] * (N_ITEMS // BATCH)
    expected = _comparable(tmp_path / "full")
    full_lines = (tmp_path / "full" / "predictions.jsonl").read_text().splitlines()

    out = tmp_path / "resumed"
    partial = out / "partial.jsonl"
    with pytest.raises(generate_calls.Interrupted):  # killed before the 2nd batch: items 1-2 on disk
        run(out, kill_at=2)
    assert not (out / "results.json").exists()
    lines = partial.read_text().splitlines()
    assert len(lines) == 1 + BATCH and "_settings" in json.loads(lines[0])
    # the kill also tore the next record in half
    with open(partial, "a") as f:
        f.write(full_lines[BATCH][: len(full_lines[BATCH]) // 2])

    with pytest.raises(generate_calls.Interrupted):  # the resumed run dies too, after items 3-4
        run(out, kill_at=2)
    assert generate_calls == [(BATCH, 6)]
    lines = partial.read_text().splitlines()
    ids = [json.loads(line).get("id") for line in lines[1:]]  # every line whole: no glued records
    assert ids == [it.id for it in items[: 2 * BATCH]]

    r = run(out)  # the last batch only
    assert generate_calls == [(BATCH, 6)]
    assert not partial.exists()
    assert _comparable(out) == expected
    assert r["counts"]["total"] == N_ITEMS

    # a partial file written with other settings is not mixed in: everything is generated again
    out = tmp_path / "changed"
    with pytest.raises(generate_calls.Interrupted):
        run(out, kill_at=2, max_new=5)
    run(out)
    assert generate_calls == [(BATCH, 6)] * (N_ITEMS // BATCH)
    assert _comparable(out) == expected
