"""MLVU (multiple-choice dev set), read from the released folder layout.

    DATA_ROOT/json/{1_plotQA,2_needle,3_ego,4_count,5_order,6_anomaly_reco,7_topic_reasoning}.json
        a JSON list per task: {video, question, candidates, answer (text of one candidate), ...}
    DATA_ROOT/video/<same name>/<video>

Score: per-task accuracy; `Avg` = mean of the per-task accuracies (macro, MLVU's "M-Avg");
`micro` = correct / total.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tinyvr.errors import ConfigError
from tinyvr.eval import metrics
from tinyvr.eval.tasks.base import (
    EvalItem,
    ItemList,
    Task,
    check_exists,
    data_error,
    get_field,
    get_options,
    match_answer,
    option_letters,
    read_json,
)

# task name -> file stem (also the video sub-folder)
TASKS: dict[str, str] = {
    "plotQA": "1_plotQA",
    "needle": "2_needle",
    "ego": "3_ego",
    "count": "4_count",
    "order": "5_order",
    "anomaly_reco": "6_anomaly_reco",
    "topic_reasoning": "7_topic_reasoning",
}


def resolve_task_names(names: Sequence[str] | None) -> list[str]:
    if names is None:
        return list(TASKS)
    if isinstance(names, str):
        names = [names]
    by_stem = {stem: n for n, stem in TASKS.items()}
    wanted = set()
    for n in names:
        if n not in TASKS and n not in by_stem:
            raise ConfigError(f"mlvu: unknown task {n!r}; valid: {list(TASKS)}")
        wanted.add(by_stem.get(n, n))
    return [n for n in TASKS if n in wanted]


class MLVU(Task):
    name = "mlvu"

    def _load(self, root: Path, out: ItemList, *, tasks: Sequence[str] | None = None,
              strict: bool = True, check_videos: bool = True, per_task_limit: int | None = None):
        """`tasks`: a subset (default all 7, each file must exist). `strict`: an answer matching no
        candidate is a DataError (the reference scores it with GT '@')."""
        names = resolve_task_names(tasks)
        for n in names:
            path = root / "json" / f"{TASKS[n]}.json"
            if not path.is_file():
                hint = "" if tasks is not None else " (pass tasks=[...] to evaluate a subset)"
                raise data_error(self.name, path, f"task file for '{n}' not found{hint}")
        for n in names:
            stem = TASKS[n]
            path = root / "json" / f"{stem}.json"
            rows = read_json(self.name, path, expect=list)
            out.files.append(path)
            if per_task_limit is not None:
                rows = rows[:per_task_limit]
            for i, row in enumerate(rows):
                video = get_field(self.name, path, i, row, "video", str)
                question = get_field(self.name, path, i, row, "question", str)
                options = get_options(self.name, path, i, row, "candidates")
                answer = get_field(self.name, path, i, row, "answer", str, nonempty=False)
                gt = match_answer(self.name, path, i, answer, options, strict=strict)
                letters = option_letters(len(options))
                video_path = root / "video" / stem / video
                if check_videos:
                    check_exists(self.name, path, i, video_path, "video")
                text = (question + "\n"
                        + "".join(f"({l}) {c}\n" for l, c in zip(letters, options))).rstrip()
                yield EvalItem(
                    id=f"{stem}/{i}",
                    task=self.name,
                    video=video_path,
                    video_kind="video",
                    question=text,  # same text in both modes; only the suffix changes
                    options=tuple(options),
                    letters=letters,
                    answer=gt,
                    stem=question,
                    sampling="linspace",  # PyAV seek sampler at linspace indices
                    category={"task": n},
                    meta={"answer_text": answer},
                )

    def aggregate(self, records):
        per = metrics.grouped_accuracy(records, "task")
        scores = {t: per[t] for t in TASKS if t in per}
        scores.update({t: v for t, v in per.items() if t not in TASKS})
        scores["Avg"] = metrics.macro_average(scores)  # M-Avg: every task weighs the same
        scores["micro"] = metrics.accuracy(records)
        return scores
