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


def test_samples_score_the_majority_and_report_pass_at_k(six_items, tmp_path, monkeypatch, loaded_model):
    """--samples K: K answers per item (adjacent rows of one generate call), scored by majority vote;
    results.json adds pass@1, maj@K and pass@K. The answers are scripted, so every number is known."""
    from types import SimpleNamespace

    from tinyvr.errors import ConfigError
    from tinyvr.recipes.evaluate import evaluate
    from tinyvr.rl.rollout import RolloutEngine

    model, processor = loaded_model
    task, items = six_items
    K = 4

    def scripted(it, i):  # even items: right 2 of 4, and the majority; odd: right 1 of 4, outvoted
        wrong = [x for x in it.letters if x != it.answer]
        letters = [it.answer, wrong[0], wrong[1], it.answer] if i % 2 == 0 else [wrong[0], wrong[0], it.answer, None]
        return [f"<think>t</think><answer>{x}</answer>" if x else "no answer" for x in letters]

    index = {it.id: i for i, it in enumerate(items)}
    prompts_seen = []

    def fake_generate(self, prompt_ids, video_embeds, params, *args, **kwargs):
        assert params.num_generations == K and params.temperature == 1.0
        batch = items[len(prompts_seen): len(prompts_seen) + len(prompt_ids)]
        prompts_seen.extend(prompt_ids)
        return SimpleNamespace(texts=[t for it in batch for t in scripted(it, index[it.id])])

    monkeypatch.setattr(RolloutEngine, "generate", fake_generate)
    r = evaluate(model, processor, task, items, "reason", tmp_path / "k", temperature=1.0, batch_size=BATCH,
                 samples=K, progress=False)
    assert r["sampling"] == {"samples": K, "pass@1": 9 / 24, f"maj@{K}": 0.5, f"pass@{K}": 1.0}
    assert r["scores"]["Avg"] == 0.5 and r["counts"]["correct"] == 3
    preds = [json.loads(line) for line in (tmp_path / "k" / "predictions.jsonl").read_text().splitlines()]
    for i, p in enumerate(preds):
        assert len(p["samples"]) == K and p["samples_correct"] == (2 if i % 2 == 0 else 1)
        assert p["correct"] == (i % 2 == 0) and f"<answer>{p['pred']}</answer>" in p["output"]
    with pytest.raises(ConfigError, match="temperature > 0"):
        evaluate(model, processor, task, items, "reason", tmp_path / "g", samples=K, progress=False)


def test_majority_ties_go_to_the_first_drawn_and_unparseable_never_wins():
    from types import SimpleNamespace

    from tinyvr.recipes.evaluate import majority

    def found(*letters):
        return [SimpleNamespace(letter=x) for x in letters]

    assert majority(found("B", "C", "C", "B")) == 0
    assert majority(found(None, None, "D")) == 2
    assert majority(found(None, None)) == 0
    assert majority(found("A", "E", "E")) == 1
