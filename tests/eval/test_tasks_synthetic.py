import json

import pytest

from tinyvr.errors import ConfigError, DataError
from tinyvr.eval.tasks import get_task

task = get_task("synthetic")

# The reference GRPO trainer's QUESTION_TEMPLATE (train/train.py L131), copied as data.
GRPO_QUESTION_TEMPLATE = ("{Question} Output the thinking process in <think> </think> and final answer "
                          "(option) in <answer> </answer> tags.")


def _rows(root, name="test.jsonl"):
    return [json.loads(line) for line in (root / name).read_text().splitlines()]


def _write(root, rows, name="test.jsonl"):
    (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_items(synthetic_root):
    items = task.load(synthetic_root)
    assert [it.id for it in items] == ["syn-00000", "syn-00001", "syn-00002"]
    assert [it.answer for it in items] == ["C", "A", "B"]
    assert [it.category for it in items] == [{"family": "counting"}, {"family": "order"},
                                             {"family": "counting"}]
    assert items[0].video == synthetic_root / "videos/test/00000.mp4" and items[0].video.is_file()
    assert items[1].letters == ("A", "B", "C") and items[1].options == ("circle", "square", "triangle")
    assert items[0].stem == "How many red balls cross the line?"
    held = task.load(synthetic_root, split="test_heldout")
    assert [it.id for it in held] == ["syn-00003"] and held[0].video.parent.name == "test_heldout"


def test_prompts_equal_training_prompts(synthetic_root):
    it = task.load(synthetic_root, limit=1)[0]
    problem = "How many red balls cross the line?\nOptions:\nA. 1\nB. 2\nC. 3\nD. 4"
    assert it.question == problem
    # reason mode = the GRPO rollout prompt (space join), option mode = the SFT prompt (newline)
    assert task.prompt(it, "reason") == "<image>\n" + GRPO_QUESTION_TEMPLATE.format(Question=problem)
    assert task.prompt(it, "reason") == (
        "<image>\nHow many red balls cross the line?\nOptions:\nA. 1\nB. 2\nC. 3\nD. 4 Output the "
        "thinking process in <think> </think> and final answer (option) in <answer> </answer> tags.")
    assert task.prompt(it, "option") == (
        "<image>\nHow many red balls cross the line?\nOptions:\nA. 1\nB. 2\nC. 3\nD. 4\n"
        "Answer with the option's letter from the given choices directly.")


def test_suffixes_match_the_training_template():
    template = pytest.importorskip("tinyvr.data.template")
    from tinyvr.eval.tasks import OPTION_SUFFIX, REASON_SUFFIX

    assert (REASON_SUFFIX, OPTION_SUFFIX) == (template.REASON_SUFFIX, template.OPTION_SUFFIX)


def test_minimal_grpo_rows(synthetic_root):
    """Only problem/solution/video_filename: options come from the problem, answer from solution."""
    rows = [{k: r[k] for k in ("problem", "solution", "video_filename")} for r in _rows(synthetic_root)]
    _write(synthetic_root, rows)
    items = task.load(synthetic_root)
    assert [it.id for it in items] == ["test/1", "test/2", "test/3"]  # line numbers
    assert [it.answer for it in items] == ["C", "A", "B"]
    assert items[1].options == ("circle", "square", "triangle")
    assert items[0].category == {"family": "all"}


@pytest.mark.parametrize("change, field", [
    ({"solution": "<answer>D</answer>"}, "solution"),  # disagrees with answer
    ({"answer": "Z"}, "answer"),
    ({"problem": None}, "problem"),
    ({"video_filename": "./videos/test/missing.mp4"}, "video_filename"),
    ({"options": ["only one"]}, "options"),
])
def test_bad_rows_name_line_and_field(synthetic_root, change, field):
    rows = _rows(synthetic_root)
    for k, v in change.items():
        if v is None:
            rows[1].pop(k)
        else:
            rows[1][k] = v
    _write(synthetic_root, rows)
    with pytest.raises(DataError) as e:
        task.load(synthetic_root)
    assert (e.value.line, e.value.field) == (2, field)  # jsonl rows are 1-based line numbers
    assert e.value.path.endswith("test.jsonl") and "[synthetic]" in str(e.value)


def test_bad_json_line_and_missing_split(synthetic_root):
    (synthetic_root / "test.jsonl").write_text((synthetic_root / "test.jsonl").read_text() + "{oops\n")
    with pytest.raises(DataError) as e:
        task.load(synthetic_root)
    assert e.value.line == 4
    with pytest.raises(DataError, match=r"splits here: \['test', 'test_heldout'\]"):
        task.load(synthetic_root, split="val")
    with pytest.raises(ConfigError):
        task.load(synthetic_root, split="../test")


def test_aggregate_per_family():
    recs = ([{"correct": True, "category": {"family": "order"}}]
            + [{"correct": c, "category": {"family": "counting"}} for c in (True, False, False)])
    assert task.aggregate(recs) == {"order": 1.0, "counting": pytest.approx(1 / 3), "Avg": 0.5}


def test_duplicate_ids_are_an_error(synthetic_root):
    rows = _rows(synthetic_root)
    rows[2]["id"] = rows[0]["id"]
    _write(synthetic_root, rows)
    with pytest.raises(DataError, match="duplicate item id 'syn-00000'") as e:
        task.load(synthetic_root)
    assert e.value.path.endswith("test.jsonl")
