"""Reasoning analysis: aha phrases, revised answers, lazy traces, summary numbers."""

import pytest

from tinyvr.eval.aha import ReasoningStats, analyze_reasoning, summarize, think_text


def test_aha_phrases_detected_in_order():
    c = (
        "<think>The man runs to the door. Wait, let me re-check the video. Hmm, actually he walks."
        " Let me double-check: on second thought I made a mistake, re-examining.</think><answer>B</answer>"
    )
    s = analyze_reasoning(c)
    assert s.aha
    assert s.aha_phrases == [
        "wait", "let me re-check", "hmm", "actually", "let me double-check", "on second thought",
        "i made a mistake", "re-examining",
    ]  # fmt: skip
    assert s.excerpt.startswith("The man runs to the door. Wait")
    assert len(s.excerpt) <= 60 + len("wait") + 120


@pytest.mark.parametrize(
    "think",
    ["The waiter is awaiting the factually correct order.", "He said hmmm-no.", "It is B."],
)
def test_word_boundaries(think):
    s = analyze_reasoning(f"<think>{think}</think>")
    assert s.aha == ("hmmm" in think)
    assert bool(s.excerpt) == s.aha


def test_only_thinking_is_searched():
    assert not analyze_reasoning("<think>The dog sits.</think><answer>Wait, B</answer>").aha


@pytest.mark.parametrize(
    "think,revised",
    [
        ("So the answer is B. Wait... actually it's C.", True),
        ("Option A is correct. Hmm, no: the answer should be (D).", True),
        ("The answer is B. Let me check again. Yes, the answer is B.", False),
        ("Option A shows a dog. Option B shows a cat. The answer is B.", False),  # listing ≠ committing
        ("I choose C. But earlier I said... I will go with C", False),
        ("It is a dog, so the answer is A", False),  # "It is a" is not option A
        ("No letters here, just prose.", False),
    ],
)
def test_revised_answer(think, revised):
    assert analyze_reasoning(f"<think>{think}</think><answer>B</answer>").revised is revised


def test_revised_respects_letters():
    c = "<think>The answer is B. Wait, the answer is E.</think>"
    assert analyze_reasoning(c).revised
    assert not analyze_reasoning(c, letters=["A", "B", "C", "D"]).revised  # E is not an option


@pytest.mark.parametrize(
    "completion,lazy,chars",
    [
        ("<think></think><answer>B</answer>", True, 0),
        ("<think> \n\t </think><answer>B</answer>", True, 0),
        ("<answer>B</answer>", True, 0),
        ("<think> ab c </think><answer>B</answer>", False, 4),
        ("<think>Let me check the", False, 16),  # unclosed (truncated) thinking still counts
    ],
)
def test_lazy_and_length(completion, lazy, chars):
    s = analyze_reasoning(completion)
    assert (s.lazy, s.think_chars) == (lazy, chars)


def test_think_text():
    assert think_text("x <think> a </think> <think>b</think>") == "a"
    assert think_text("no think") is None
    assert analyze_reasoning("<think> one two  three </think>").think_words == 3


def test_summarize_numbers():
    stats = [
        ReasoningStats(0, 0, lazy=True, aha=False),
        ReasoningStats(10, 2, lazy=False, aha=True, aha_phrases=["wait"], excerpt="e1"),
        ReasoningStats(20, 4, lazy=False, aha=True, aha_phrases=["wait", "actually"], revised=True, excerpt="e2"),
        ReasoningStats(50, 6, lazy=False, aha=False),
    ]
    s = summarize(stats, max_examples=1)
    assert s["n"] == 4
    assert s["think_chars_mean"] == 20.0 and s["think_chars_median"] == 15.0
    assert s["think_words_mean"] == 3.0
    assert (s["lazy_rate"], s["aha_rate"], s["revised_rate"]) == (0.25, 0.5, 0.25)
    assert s["aha_phrase_counts"] == {"wait": 2, "actually": 1}
    assert s["examples"] == ["e1"]
    assert summarize([])["n"] == 0
