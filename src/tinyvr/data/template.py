"""The reference's `qwen2_base` text template (§4.1): plain `USER:`/`ASSISTANT:` roles, no chat tokens.

    generation: "{SYSTEM} USER: <image>\\n{question} ASSISTANT:"
    training:   "{SYSTEM} USER: <image>\\n{question} ASSISTANT: {answer}<|endoftext|>"

Multi-turn conversations repeat "USER: {q} ASSISTANT: {a}<|endoftext|>" after the system string.
"""

from __future__ import annotations

import string
from typing import Sequence

from tinyvr.constants import EOS_TOKEN, IMAGE_TOKEN

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant "
          "gives helpful, detailed, and polite answers to the user's questions.")
REASON_SUFFIX = ("Output the thinking process in <think> </think> and final answer (option) in "
                 "<answer> </answer> tags.")
OPTION_SUFFIX = "Answer with the option's letter from the given choices directly."
# GRPO training joins question and instruction with one space (§5.2); evaluation uses "\n".
GRPO_QUESTION_TEMPLATE = "{Question} " + REASON_SUFFIX

USER = "USER: "
ASSISTANT = "ASSISTANT:"  # the generation prompt ends here, without a trailing space
ANSWER_SEP = " "  # between "ASSISTANT:" and the answer; it is part of the answer's first token


def option_check(options: Sequence[str], answer: int) -> str:
    """The look-up from an answer's text to its letter, written out: "A. cyan: no" ... up to the
    answer's line, "C. green: yes". Each line is a copy of an option line plus one comparison with
    the stated answer, steps a small model learns quickly, where naming the letter in one step needs
    a content look-up it learns very slowly (docs/tiny-study.md, item 24). The answer's letter is
    then the last line's."""
    return "\n".join(f"{string.ascii_uppercase[i]}. {options[i]}: {'yes' if i == answer else 'no'}"
                     for i in range(answer + 1))


def state_answer(text: str) -> str:
    """The thinking's last sentence before the option check: the answer's text, stated."""
    return f"The answer is {text}."


def checked_thinking(options: Sequence[str], answer: int, evidence: str = "") -> str:
    """The thinking of a reason-mode answer: the evidence (if any), the answer's text stated, then
    the option check on its own lines."""
    head = f"{evidence} {state_answer(options[answer])}" if evidence else state_answer(options[answer])
    return f"{head}\n{option_check(options, answer)}"


def reasoned_answer(think: str, letter: str) -> str:
    """A reason-mode answer: the thinking in <think> tags, then the letter in <answer> tags."""
    return f"<think>{think}</think> <answer>{letter}</answer>"


def format_question(question: str) -> str:
    """Put the video placeholder first: drop every `<image>`, strip, prefix `<image>\\n`."""
    return (IMAGE_TOKEN + "\n" + question.replace(IMAGE_TOKEN, "").strip()).strip()


def grpo_question(problem: str) -> str:
    """The GRPO training question for a dataset `problem` (reasoning instruction appended)."""
    return GRPO_QUESTION_TEMPLATE.format(Question=problem)


def build_prompt(question: str, answer: str | None = None) -> str:
    """One turn: the generation prompt (answer None) or the training text (answer given)."""
    prompt = f"{SYSTEM} {USER}{format_question(question)} {ASSISTANT}"
    if answer is None:
        return prompt
    return prompt + ANSWER_SEP + answer + EOS_TOKEN


def check_conversation(conversations: Sequence[dict]) -> list[tuple[str, str | None]]:
    """[(human, gpt | None)] turns of a LLaVA conversation; ValueError says what is wrong.

    A leading non-human message is skipped (as the reference); roles must alternate human/gpt; a
    last human turn without answer is a generation request. Exactly one `<image>`, in the first
    human turn (one video per sample).
    """
    if not isinstance(conversations, (list, tuple)) or not conversations:
        raise ValueError("conversations must be a non-empty list of {from, value} messages")
    msgs = list(conversations)
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("from"), str) or not isinstance(m.get("value"), str):
            raise ValueError(f"message {i} must be an object with string 'from' and 'value'")
    if msgs[0]["from"] != "human":
        msgs = msgs[1:]
    if not msgs:
        raise ValueError("no human message")
    turns: list[tuple[str, str | None]] = []
    for i in range(0, len(msgs), 2):
        human = msgs[i]
        gpt = msgs[i + 1] if i + 1 < len(msgs) else None
        if human["from"] != "human":
            raise ValueError(f"message {i} is from '{human['from']}', expected 'human' (roles must alternate)")
        if gpt is not None and gpt["from"] != "gpt":
            raise ValueError(f"message {i + 1} is from '{gpt['from']}', expected 'gpt' (roles must alternate)")
        if gpt is not None and IMAGE_TOKEN in gpt["value"]:
            raise ValueError(f"message {i + 1}: '{IMAGE_TOKEN}' in an answer")
        turns.append((human["value"], None if gpt is None else gpt["value"]))
    n_images = sum(h.count(IMAGE_TOKEN) for h, _ in turns)
    if IMAGE_TOKEN not in turns[0][0]:
        raise ValueError(f"the first human message has no '{IMAGE_TOKEN}' placeholder")
    if n_images != 1:
        raise ValueError(f"{n_images} '{IMAGE_TOKEN}' placeholders; one video per sample allows one")
    return turns


def conversation_segments(conversations: Sequence[dict]) -> list[tuple[str, bool]]:
    """The conversation's text as (piece, supervised) segments whose concatenation is the prompt.

    Supervised pieces are each answer with its leading space (" {answer}") and the closing
    `<|endoftext|>`; the split falls before that space, where Qwen-style pre-tokenisers split
    anyway, so tokenising the pieces separately gives the ids of the joint text.
    """
    turns = check_conversation(conversations)
    segments: list[tuple[str, bool]] = []
    text = SYSTEM + " "
    for human, gpt in turns:
        if IMAGE_TOKEN in human:
            human = format_question(human)
        text += f"{USER}{human} {ASSISTANT}"
        if gpt is None:
            break
        segments += [(text, False), (ANSWER_SEP + gpt, True), (EOS_TOKEN, True)]
        text = ""
    if text:
        segments.append((text, False))
    return segments


def build_conversation_prompt(conversations: Sequence[dict]) -> str:
    """The full prompt of a multi-turn conversation (ends with "ASSISTANT:" if the last turn
    is an unanswered human message)."""
    return "".join(piece for piece, _ in conversation_segments(conversations))
