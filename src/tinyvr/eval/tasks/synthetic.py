"""tinyvr's own synthetic video-reasoning benchmark, stored in the GRPO training format.

    DATA_ROOT/{split}.jsonl   split "test" (default) or "test_heldout"; one row per question:
        {"problem": "{question}\\nOptions:\\nA. x\\nB. y…", "solution": "<answer>B</answer>",
         "video_filename": "./videos/test/<id>.mp4", "id", "family", "question",
         "options": [...], "answer": "B", ...}
    DATA_ROOT/videos/...      `video_filename` is relative to DATA_ROOT (leading "./" dropped, as the
                              GRPO trainer joins it)

Only `problem`, `solution` and `video_filename` are required (so any GRPO jsonl can be scored);
`options` default to the "X. text" lines of `problem`, `answer` to the `solution` tag, `id` to the
line number, `family` to "all".

The prompts are the training prompts on purpose: reason mode = the GRPO prompt (question and
instruction joined by a space), option mode = the SFT prompt (joined by a newline).
Score: per-family accuracy and `Avg` = correct / total.
"""

from __future__ import annotations

import re
from pathlib import Path

from tinyvr.errors import ConfigError
from tinyvr.eval import metrics
from tinyvr.eval.tasks.base import (
    IMAGE_PREFIX,
    OPTION_SUFFIX,
    REASON_SUFFIX,
    EvalItem,
    ItemList,
    Task,
    check_exists,
    check_mode,
    data_error,
    get_field,
    get_options,
    iter_jsonl,
    option_letters,
)

_ANSWER_TAG = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
_OPTION_LINE = re.compile(r"^([A-Z])\.\s?(.*)$")
DEFAULT_FAMILY = "all"


def options_from_problem(problem: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(letters, texts) of the 'X. text' lines after an 'Options:' line, or None."""
    head, sep, tail = problem.partition("Options:")
    if not sep:
        return None
    letters, texts = [], []
    for line in tail.strip("\n").splitlines():
        m = _OPTION_LINE.match(line.strip())
        if not m:
            break
        letters.append(m.group(1))
        texts.append(m.group(2))
    return (tuple(letters), tuple(texts)) if len(letters) >= 2 else None


class Synthetic(Task):
    name = "synthetic"

    def _load(self, root: Path, out: ItemList, *, split: str = "test", check_videos: bool = True):
        if not isinstance(split, str) or not re.fullmatch(r"[\w.-]+", split):
            raise ConfigError(f"synthetic: split must be a file stem such as 'test' or "
                              f"'test_heldout', got {split!r}")
        path = root / f"{split}.jsonl"
        if not path.is_file():
            have = sorted(p.stem for p in root.glob("*.jsonl"))
            raise data_error(self.name, path, f"split '{split}' not found; splits here: {have}")
        out.files.append(path)
        for lineno, row in iter_jsonl(self.name, path):
            yield self._item(root, path, lineno, row, split, check_videos)

    def _item(self, root, path, lineno, row, split, check_videos) -> EvalItem:
        problem = get_field(self.name, path, lineno, row, "problem", str)
        solution = get_field(self.name, path, lineno, row, "solution", str)
        video = get_field(self.name, path, lineno, row, "video_filename", str)
        if "options" in row:
            options = tuple(get_options(self.name, path, lineno, row, "options"))
            letters = option_letters(len(options))
        else:
            parsed = options_from_problem(problem)
            if parsed is None:
                raise data_error(self.name, path, "missing, and no 'X. text' option lines after "
                                 "'Options:' in problem", row=lineno, field="options")
            letters, options = parsed
        tag = _ANSWER_TAG.search(solution)
        tagged = tag.group(1).strip() if tag else None
        answer = row.get("answer", tagged)
        if not isinstance(answer, str) or answer not in letters:
            field = "answer" if "answer" in row else "solution"
            raise data_error(self.name, path, f"answer {answer!r} is not one of the option letters "
                             f"{list(letters)}", row=lineno, field=field)
        if tagged is not None and tagged != answer:
            # the reward is computed from `solution`: the two must agree or training and eval differ
            raise data_error(self.name, path, f"solution says {tagged!r} but answer says {answer!r}",
                             row=lineno, field="solution")
        rel = video[2:] if video.startswith("./") else video
        video_path = root / rel
        if check_videos:
            check_exists(self.name, path, lineno, video_path, "video", field_name="video_filename")
        stem = row.get("question")
        if not isinstance(stem, str):
            stem = problem.partition("\nOptions:")[0]
        family = row.get("family", DEFAULT_FAMILY)
        rid = row.get("id")
        return EvalItem(
            id=str(rid) if rid not in (None, "") else f"{split}/{lineno}",
            task=self.name,
            video=video_path,
            video_kind="video",
            question=problem,
            options=tuple(options),
            letters=tuple(letters),
            answer=answer,
            stem=stem,
            sampling="linspace",
            category={"family": str(family)},
            meta={"split": split},
        )

    def prompt(self, item: EvalItem, mode: str) -> str:
        check_mode(mode)
        if mode == "reason":  # GRPO training prompt: QUESTION_TEMPLATE joins with a space
            return f"{IMAGE_PREFIX}{item.question} {REASON_SUFFIX}"
        return f"{IMAGE_PREFIX}{item.question}\n{OPTION_SUFFIX}"  # SFT training prompt

    def aggregate(self, records):
        scores = dict(metrics.grouped_accuracy(records, "family"))
        scores["Avg"] = metrics.accuracy(records)
        return scores
