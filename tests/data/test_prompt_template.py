"""tinyvr.data.template: the reference's qwen2_base strings, snapshot-tested (§4.1, §5.2)."""

from __future__ import annotations

import pytest

from tinyvr.data import template
from tinyvr.data.template import (GRPO_QUESTION_TEMPLATE, OPTION_SUFFIX, REASON_SUFFIX, SYSTEM,
                                  build_conversation_prompt, build_prompt, check_conversation,
                                  conversation_segments, format_question, grpo_question)

QUESTION = "What does the red circle do?\nOptions:\nA. moves left.\nB. stops."
SYS = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
       "helpful, detailed, and polite answers to the user's questions.")


def test_constants_are_the_reference_strings():
    assert SYSTEM == SYS
    assert REASON_SUFFIX == ("Output the thinking process in <think> </think> and final answer (option) "
                             "in <answer> </answer> tags.")
    assert OPTION_SUFFIX == "Answer with the option's letter from the given choices directly."
    assert GRPO_QUESTION_TEMPLATE == "{Question} " + REASON_SUFFIX


def test_generation_prompt_snapshot():
    assert build_prompt(QUESTION) == (
        SYS + " USER: <image>\nWhat does the red circle do?\nOptions:\nA. moves left.\nB. stops. ASSISTANT:")


def test_training_prompt_snapshot():
    assert build_prompt(QUESTION, "<answer>A</answer>") == (
        SYS + " USER: <image>\nWhat does the red circle do?\nOptions:\nA. moves left.\nB. stops. "
        "ASSISTANT: <answer>A</answer><|endoftext|>")


def test_grpo_prompt_matches_spec():
    # §5.2: the trainer prefixes "<image>"; the question and the instruction are joined by a space
    assert build_prompt("<image>" + grpo_question("Q?\nA. x")) == (
        SYS + " USER: <image>\nQ?\nA. x Output the thinking process in <think> </think> and final "
        "answer (option) in <answer> </answer> tags. ASSISTANT:")


@pytest.mark.parametrize("question,expected", [
    ("<image>What?", "<image>\nWhat?"),
    ("<image>\nWhat?", "<image>\nWhat?"),
    ("  What? <image> ", "<image>\nWhat?"),
    ("What <image> is <image> this?", "<image>\nWhat  is  this?"),  # inner spaces stay, as reference
    ("No placeholder", "<image>\nNo placeholder"),
    ("<image>", "<image>"),
])
def test_format_question(question, expected):
    assert format_question(question) == expected


def test_multi_turn_conversation_snapshot():
    conv = [{"from": "human", "value": "<image>\nQ1"}, {"from": "gpt", "value": "A1"},
            {"from": "human", "value": "Q2"}, {"from": "gpt", "value": "A2"}]
    assert build_conversation_prompt(conv) == (
        SYS + " USER: <image>\nQ1 ASSISTANT: A1<|endoftext|>USER: Q2 ASSISTANT: A2<|endoftext|>")
    assert build_conversation_prompt(conv[:3]) == (
        SYS + " USER: <image>\nQ1 ASSISTANT: A1<|endoftext|>USER: Q2 ASSISTANT:")


def test_single_turn_conversation_equals_build_prompt():
    conv = [{"from": "human", "value": "<image>\n" + QUESTION}, {"from": "gpt", "value": "B"}]
    assert build_conversation_prompt(conv) == build_prompt(QUESTION, "B")
    assert build_conversation_prompt(conv[:1]) == build_prompt(QUESTION)


def test_segments_mark_only_answers_and_eos():
    conv = [{"from": "human", "value": "<image>Q"}, {"from": "gpt", "value": "A"}]
    assert conversation_segments(conv) == [
        (SYS + " USER: <image>\nQ ASSISTANT:", False), (" A", True), ("<|endoftext|>", True)]


def test_leading_non_human_message_is_skipped():
    conv = [{"from": "gpt", "value": "hello"}, {"from": "human", "value": "<image>Q"},
            {"from": "gpt", "value": "A"}]
    assert build_conversation_prompt(conv) == build_prompt("Q", "A")


@pytest.mark.parametrize("conv,match", [
    ([], "non-empty"),
    ([{"from": "human", "value": "<image>Q"}, {"from": "human", "value": "Q"}], "expected 'gpt'"),
    ([{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}], "no '<image>'"),
    ([{"from": "human", "value": "<image>Q"}, {"from": "gpt", "value": "A"},
      {"from": "human", "value": "<image>Q2"}, {"from": "gpt", "value": "A2"}], "2 '<image>'"),
    ([{"from": "human", "value": "<image>Q"}, {"from": "gpt", "value": "<image>"}], "in an answer"),
    ([{"from": "human", "value": 3}], "string"),
])
def test_check_conversation_rejects(conv, match):
    with pytest.raises(ValueError, match=match):
        check_conversation(conv)


def test_eval_tasks_use_the_same_suffixes():
    base = pytest.importorskip("tinyvr.eval.tasks.base")
    assert base.REASON_SUFFIX == template.REASON_SUFFIX
    assert base.OPTION_SUFFIX == template.OPTION_SUFFIX


def test_option_check_copies_each_option_line_up_to_the_answer():
    from tinyvr.data.template import option_check, reasoned_answer, state_answer

    opts = ["cyan", "orange", "green", "red", "blue"]
    assert option_check(opts, 2) == "A. cyan: no\nB. orange: no\nC. green: yes"
    assert option_check(opts, 0) == "A. cyan: yes"
    assert option_check(opts, 4).count("\n") == 4 and option_check(opts, 4).endswith("E. blue: yes")
    think = f"{state_answer('green')}\n{option_check(opts, 2)}"
    assert reasoned_answer(think, "C") == ("<think>The answer is green.\nA. cyan: no\nB. orange: no\nC. green: yes"
                                           "</think> <answer>C</answer>")


def test_checked_thinking_puts_the_evidence_before_the_stated_answer():
    from tinyvr.data.template import checked_thinking

    opts = ["cyan", "green"]
    assert checked_thinking(opts, 1) == "The answer is green.\nA. cyan: no\nB. green: yes"
    assert checked_thinking(opts, 0, "It is cyan.") == "It is cyan. The answer is cyan.\nA. cyan: yes"
