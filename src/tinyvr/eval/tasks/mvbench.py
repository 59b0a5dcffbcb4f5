"""MVBench: 20 tasks of 16-frame multiple-choice questions, read from the released folder layout.

    DATA_ROOT/json/<task file>.json     a JSON list per task: {video, question, candidates, answer,
                                        start?, end?}; `answer` is the text of one candidate
    DATA_ROOT/video/<sub folder>/<video>  the clip (mp4/avi/webm), or for Episodic Reasoning a
                                        folder of JPEG frames 00001.jpg… sampled at 3 fps

Score: per-task accuracy and `Avg` = correct / total over all items (micro), as R1 reports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

from tinyvr.errors import ConfigError
from tinyvr.eval import metrics
from tinyvr.eval.tasks.base import (
    EvalItem,
    ItemList,
    Task,
    check_exists,
    check_mode,
    data_error,
    get_bound,
    get_field,
    get_options,
    match_answer,
    option_letters,
    read_json,
)


class MVBenchTask(NamedTuple):
    file: str  # under DATA_ROOT/json/
    folder: str  # under DATA_ROOT/video/
    reader: str  # the reference's reader: "video" (full decode + linspace), "avi"/"webm" (decord +
    #              segment-middle), "frame" (JPEG folder + segment-middle)
    bound: bool  # rows carry start/end seconds


# The official MVBench task order (the order of the per-task scores in its result line).
TASKS: dict[str, MVBenchTask] = {
    "Action Sequence": MVBenchTask("action_sequence.json", "star/Charades_v1_480", "video", True),
    "Action Prediction": MVBenchTask("action_prediction.json", "star/Charades_v1_480", "video", True),
    "Action Antonym": MVBenchTask("action_antonym.json", "ssv2_video", "webm", False),
    "Fine-grained Action": MVBenchTask("fine_grained_action.json", "Moments_in_Time_Raw/videos",
                                       "video", False),
    "Unexpected Action": MVBenchTask("unexpected_action.json", "FunQA_test/test", "video", False),
    "Object Existence": MVBenchTask("object_existence.json", "clevrer/video_validation", "video", False),
    "Object Interaction": MVBenchTask("object_interaction.json", "star/Charades_v1_480", "video", True),
    "Object Shuffle": MVBenchTask("object_shuffle.json", "perception/videos", "video", False),
    "Moving Direction": MVBenchTask("moving_direction.json", "clevrer/video_validation", "video", False),
    "Action Localization": MVBenchTask("action_localization.json", "sta/sta_video", "video", True),
    "Scene Transition": MVBenchTask("scene_transition.json", "scene_qa/video", "video", False),
    "Action Count": MVBenchTask("action_count.json", "perception/videos", "video", False),
    "Moving Count": MVBenchTask("moving_count.json", "clevrer/video_validation", "video", False),
    "Moving Attribute": MVBenchTask("moving_attribute.json", "clevrer/video_validation", "video", False),
    "State Change": MVBenchTask("state_change.json", "perception/videos", "video", False),
    "Fine-grained Pose": MVBenchTask("fine_grained_pose.json", "nturgbd", "avi", False),
    "Character Order": MVBenchTask("character_order.json", "perception/videos", "video", False),
    "Egocentric Navigation": MVBenchTask("egocentric_navigation.json", "vlnqa", "video", False),
    "Episodic Reasoning": MVBenchTask("episodic_reasoning.json", "tvqa/frames_fps3_hq", "frame", True),
    "Counterfactual Inference": MVBenchTask("counterfactual_inference.json",
                                            "clevrer/video_validation", "video", False),
}
FRAME_FPS = 3.0  # the TVQA frames were extracted at 3 fps; the reference assumes it


def resolve_task_names(names: Sequence[str] | None) -> list[str]:
    """Task display names in official order; also accepts json stems such as 'action_sequence'."""
    if names is None:
        return list(TASKS)
    if isinstance(names, str):
        names = [names]
    by_stem = {t.file[:-len(".json")]: name for name, t in TASKS.items()}
    wanted = set()
    for n in names:
        if n in TASKS:
            wanted.add(n)
        elif n in by_stem:
            wanted.add(by_stem[n])
        else:
            raise ConfigError(f"mvbench: unknown task {n!r}; valid: {list(TASKS)}")
    return [n for n in TASKS if n in wanted]


class MVBench(Task):
    name = "mvbench"

    def _load(self, root: Path, out: ItemList, *, tasks: Sequence[str] | None = None,
              strict: bool = True, check_videos: bool = True, per_task_limit: int | None = None):
        """`tasks`: a subset to load (default all 20, each file must exist). `strict`: an answer
        that matches no candidate is a DataError (the reference silently scores it with GT '@').
        `per_task_limit`: the first N items of each task (a smoke run that covers every task)."""
        names = resolve_task_names(tasks)
        json_dir, video_dir = root / "json", root / "video"
        # every file is checked before any is parsed, so a missing one fails fast
        for n in names:
            path = json_dir / TASKS[n].file
            if not path.is_file():
                hint = "" if tasks is not None else " (pass tasks=[...] to evaluate a subset)"
                raise data_error(self.name, path, f"task file for '{n}' not found{hint}")
        for n in names:
            spec = TASKS[n]
            path = json_dir / spec.file
            rows = read_json(self.name, path, expect=list)
            out.files.append(path)
            if per_task_limit is not None:
                rows = rows[:per_task_limit]
            for i, row in enumerate(rows):
                yield self._item(n, spec, path, i, row, video_dir, strict, check_videos)

    def _item(self, task_name, spec, path, i, row, video_dir, strict, check_videos) -> EvalItem:
        video = get_field(self.name, path, i, row, "video", str)
        question = get_field(self.name, path, i, row, "question", str)
        options = get_options(self.name, path, i, row, "candidates")
        answer = get_field(self.name, path, i, row, "answer", str, nonempty=False)
        gt = match_answer(self.name, path, i, answer, options, strict=strict)
        letters = option_letters(len(options))
        kind = "frames" if spec.reader == "frame" else "video"
        video_path = video_dir / spec.folder / video
        if check_videos:
            check_exists(self.name, path, i, video_path, kind)
        # The reference reads the bound only for its decord/frame readers; for the "video" reader
        # tasks (Action Sequence/Prediction, Object Interaction, Action Localization) it decodes the
        # whole clip (§10.2 item 13). We keep the bound for every bound task so the evaluator reads
        # the segment the question is about.
        bound = get_bound(self.name, path, i, row) if spec.bound else None
        reason_text = (question + "\nOptions:\n"
                       + "".join(f"{l}. {c}\n" for l, c in zip(letters, options))).rstrip()
        return EvalItem(
            id=f"{spec.file[:-len('.json')]}/{i}",
            task=self.name,
            video=video_path,
            video_kind=kind,
            question=reason_text,
            options=tuple(options),
            letters=letters,
            answer=gt,
            stem=question,
            bound=bound,
            fps=FRAME_FPS if kind == "frames" else None,
            sampling="linspace" if spec.reader == "video" else "segment_middle",
            category={"task": task_name},
            meta={"reader": spec.reader, "answer_text": answer},
        )

    def question_text(self, item: EvalItem, mode: str) -> str:
        check_mode(mode)
        if mode == "reason":
            return item.question  # R1: "{q}\nOptions:\nA. c0\nB. c1…"
        # [TV] option mode: "{q}\n(A) c0\n(B) c1…"
        return (item.stem + "\n"
                + "".join(f"({l}) {c}\n" for l, c in zip(item.letters, item.options))).rstrip()

    def aggregate(self, records):
        per_task = metrics.grouped_accuracy(records, "task")
        order = [t for t in TASKS if t in per_task] + [t for t in per_task if t not in TASKS]
        scores = {t: per_task[t] for t in order}
        scores["Avg"] = metrics.accuracy(records)  # micro: total correct / total
        return scores
