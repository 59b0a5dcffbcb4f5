"""Rewards: reference values of spec §6.3/§6.2 step 9, and tinyvr's closed loopholes (§10.3)."""

import subprocess
import sys

import pytest

from tinyvr.errors import ConfigError
from tinyvr.rl.rewards import (
    accuracy_reward,
    format_reward,
    informative_length,
    tinyllava_r1_reward,
    tinyllava_r1_reward_breakdown,
)

GT_C = "<answer>C</answer>"


def acc(completion, solution=GT_C, compat="tinyvr", **kw):
    return accuracy_reward([completion], [solution], compat=compat, **kw)[0]


# ---- accuracy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion,expected",
    [
        # verified examples of spec §6.3 (GT C)
        ("<answer>C</answer>", 1.0),
        ("<answer>C. cat</answer>", 1.0),
        ("Clearly wrong", 1.0),
        ("<answer>\nC\n</answer>", 0.0),
        ("<answer>(C)</answer>", 0.0),
        ("<answer>c</answer>", 0.0),
        # gaming cases of spec §10.3
        ("<answer>C or D</answer>", 1.0),  # first char of a hedge
        ("C is my guess, or maybe D", 1.0),  # untagged, starts with the letter
        ("<answer>C</answer><answer>D</answer>", 1.0),  # first of several tags
        ("<think>x</think> <answer>D</answer>", 0.0),
        ("", 0.0),
        ("<answer></answer>", 0.0),
    ],
)
def test_reference_accuracy(completion, expected):
    assert acc(completion, compat="reference") == expected


def test_reference_accuracy_gt_rules():
    assert acc("C", solution="  C  ", compat="reference") == 1.0  # untagged solution stripped
    assert acc("A man runs", solution="<answer>A</answer>", compat="reference") == 1.0  # §10.3 #1
    # multi-line GT tag does not match without DOTALL: the whole solution is the GT
    assert acc("<answer>C</answer>", solution="<answer>\nC</answer>", compat="reference") == 0.0


@pytest.mark.parametrize(
    "completion,expected",
    [
        ("<answer>C</answer>", 1.0),
        ("<answer>C. cat</answer>", 1.0),
        ("<answer>\nC\n</answer>", 1.0),  # whitespace/newlines inside the tag are fine
        ("<answer>(C)</answer>", 1.0),
        ("<answer>c</answer>", 1.0),  # decision: a lone lower-case letter is unambiguous
        ("<answer>The answer is C</answer>", 1.0),
        ("<think>hmm</think>\n<answer> C. </answer>", 1.0),
        ("Clearly wrong", 0.0),  # no tag → 0
        ("C", 0.0),
        ("<answer>C or D</answer>", 0.0),
        ("<answer>C/D</answer>", 0.0),
        ("<answer>Clearly</answer>", 0.0),
        ("<answer>C</answer><answer>D</answer>", 0.0),  # tags must agree
        ("<answer>D</answer>", 0.0),
        ("<answer></answer>", 0.0),
    ],
)
def test_tinyvr_accuracy(completion, expected):
    assert acc(completion) == expected


def test_tinyvr_accuracy_gt_forms_and_options():
    assert acc("<answer>A</answer>", solution="<answer>\n A \n</answer>") == 1.0
    assert acc("<answer>A</answer>", solution="A") == 1.0
    assert acc("<answer>A man</answer>", solution="<answer>A</answer>") == 0.0  # prose, not A
    # letters from the options column: "I" is not an option of a 4-way question
    opts = [["owl", "sheep", "dog", "cat"]]
    assert accuracy_reward(["<answer>D</answer>"], ["<answer>D</answer>"], options=opts) == [1.0]
    assert accuracy_reward(["<answer>E</answer>"], ["<answer>E</answer>"], options=opts) == [0.0]
    assert accuracy_reward(["<answer>E</answer>"], ["<answer>E</answer>"]) == [1.0]  # A..Z
    problem_style = ["What?\nOptions:\nA. owl.\nB. sheep.\n"]
    assert accuracy_reward(["<answer>C</answer>"], ["<answer>C</answer>"], options=problem_style) == [0.0]
    # a free-form GT is compared as text
    assert acc("<answer> two dogs </answer>", solution="<answer>two dogs</answer>") == 1.0
    assert acc("<answer>three</answer>", solution="<answer>two dogs</answer>") == 0.0


def test_conversational_completions_use_last_message():
    conv = [
        [{"role": "user", "content": "<answer>D</answer>"}, {"role": "assistant", "content": "<answer>C</answer>"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "<answer>C</answer>"}]}],
    ]
    assert accuracy_reward(conv, [GT_C, GT_C]) == [1.0, 1.0]


def test_column_length_mismatch():
    with pytest.raises(ValueError, match="solution"):
        accuracy_reward(["a", "b"], [GT_C])


# ---- format -----------------------------------------------------------------------------


def unique_text(n):
    """n characters of text with no repeated word 3-gram (and no edge whitespace)."""
    s, i = "", 0
    while len(s) < n:
        s += f"w{i} "
        i += 1
    s = s[:n]
    return s[:-1] + "z" if s.endswith(" ") else s


def fmt(completion, compat="tinyvr", **kw):
    return format_reward([completion], compat=compat, **kw)[0]


@pytest.mark.parametrize("compat", ["reference", "tinyvr"])
@pytest.mark.parametrize("n,expected", [(0, 0.5), (600, 0.75), (1200, 1.0), (2400, 1.0)])
def test_format_length_values(compat, n, expected):
    think = unique_text(n)
    assert len(think) == n and informative_length(think) == n
    assert fmt(f"<think>{think}</think><answer>C</answer>", compat) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("compat", ["reference", "tinyvr"])
@pytest.mark.parametrize(
    "completion",
    [
        "<answer>C</answer>",  # missing think
        "<think>a</think><answer>C</answer><answer>C</answer>",  # answer tags twice
        "<think>a</think><think>b</think><answer>C</answer>",  # think tags twice
        "Sure. <think>a</think><answer>C</answer>",  # text before
        "<think>a</think><answer>C</answer> done",  # text after
        "<answer>C</answer><think>a</think>",  # wrong order
        "<think>a</think><answer>C",  # unclosed
    ],
)
def test_format_gate_zero(compat, completion):
    assert fmt(completion, compat) == 0.0


def test_format_gate_allows_outer_and_middle_whitespace():
    assert fmt("\n <think>ab</think>\n\n<answer>C</answer>\n", "reference") == pytest.approx(0.5 + 0.5 * 2 / 1200)


def test_whitespace_padding_is_not_farmable():
    think = "a" + " " * 1200 + "b"
    c = f"<think>{think}</think><answer>C</answer>"
    assert fmt(c, "reference") == 1.0  # 1202 characters
    assert fmt(c) == pytest.approx(0.5 + 0.5 * 3 / 1200)  # "a b"


def test_repetition_is_not_farmable():
    think = "The dog runs to the ball. " * 50
    c = f"<think>{think}</think><answer>C</answer>"
    assert fmt(c, "reference") == 1.0
    # first copy: 6 words, 20 letters + 5 spaces; then "The" and "dog" of the second copy start
    # new 3-grams (ball. The / the dog after "ball."): 25 + 2*(3+1) = 33 characters
    assert informative_length(think.strip()) == 33
    assert fmt(c) == pytest.approx(0.5 + 0.5 * 33 / 1200)


def test_copying_the_problem_does_not_count():
    problem = "What is the man doing in the video?\nOptions:\nA. running.\nB. sitting."
    assert informative_length(problem) == len(" ".join(problem.split()))
    assert informative_length(problem, problem) == len("What is")  # only the start-pad 3-grams
    c = f"<think>{problem}</think><answer>A</answer>"
    assert format_reward([c], problem=[problem]) == [pytest.approx(0.5 + 0.5 * 7 / 1200)]
    assert format_reward([c], compat="reference", problem=[problem]) == [pytest.approx(0.5 + 0.5 * len(problem) / 1200)]


def test_option_check_lines_do_not_count_so_the_length_does_not_depend_on_the_letter():
    """The option check ("A. red: no" ... up to the picked letter's "yes") copies the problem's
    option lines: it counts nothing, so completions that state answers of the same length and check
    up to different letters earn the same length term; a line naming no option of the problem, or
    one with changed text, still counts."""
    from tinyvr.data.template import checked_thinking

    options = ["navy", "blue", "pink", "gray", "teal"]  # texts of one length: one stated length
    problem = "Which colour was the ball at the start?\nOptions:\n" + "\n".join(
        f"{'ABCDE'[k]}. {o}" for k, o in enumerate(options))
    thinks = [checked_thinking(options, k) for k in range(5)]
    assert len(thinks[4]) > len(thinks[0]) + 30  # the raw lengths differ by the check's lines
    lengths = {informative_length(t, problem) for t in thinks}
    assert lengths == {len("The answer is navy.")}
    assert informative_length(thinks[4]) > informative_length(thinks[0])  # without the problem: counted
    fake = thinks[0] + "\nF. purple: no\nB. blue green: yes"
    assert informative_length(fake, problem) == len("The answer is navy. F. purple: no B. blue green: yes")
    rewards = format_reward([f"<think>{t}</think> <answer>{'ABCDE'[k]}</answer>" for k, t in enumerate(thinks)],
                            problem=[problem] * 5)
    assert len(set(rewards)) == 1 and rewards[0] > 0.5


def test_format_params():
    c = "<think>" + unique_text(300) + "</think><answer>C</answer>"
    assert fmt(c, length_scale=600) == pytest.approx(0.75)
    assert fmt(c, min_score=0.0) == pytest.approx(0.25)


# ---- combined ---------------------------------------------------------------------------

THINK600 = unique_text(600)
TABLE = [
    f"<think>{THINK600}</think><answer>C</answer>",  # correct + format (fmt 0.75)
    "<answer>C</answer>",  # correct, no format
    f"<think>{THINK600}</think><answer>D</answer>",  # wrong + format
    "<answer>D</answer>",  # wrong, no format
]


@pytest.mark.parametrize("compat", ["reference", "tinyvr"])
def test_combined_reward_table(compat):
    sol = [GT_C] * 4
    assert tinyllava_r1_reward(TABLE, sol, compat=compat) == pytest.approx([1.75, 1.0, -0.75, -2.0])
    assert tinyllava_r1_reward(TABLE, sol, compat=compat, wrong_penalty=False) == pytest.approx([1.75, 1.0, 0.75, -2.0])
    assert tinyllava_r1_reward(TABLE, sol, compat=compat, continuous_length=False) == [2.0, 1.0, -1.0, -2.0]
    assert tinyllava_r1_reward(TABLE, sol, compat=compat, zero_value=0.0) == pytest.approx([1.75, 1.0, -0.75, 0.0])
    parts = tinyllava_r1_reward_breakdown(TABLE, sol, compat=compat, zero_value=-1.5)
    assert parts["accuracy"] == [1.0, 1.0, 0.0, 0.0]
    assert parts["format"] == pytest.approx([0.75, 0.0, 0.75, 0.0])
    assert parts["total"] == pytest.approx([1.75, 1.0, -0.75, -1.5])


def test_combined_gaming_closed():
    # an untagged text starting with the right letter earns 1 in reference, −2 in tinyvr
    assert tinyllava_r1_reward(["Clearly wrong"], [GT_C], compat="reference") == [1.0]
    assert tinyllava_r1_reward(["Clearly wrong"], [GT_C]) == [-2.0]


def test_unknown_compat_lists_modes():
    with pytest.raises(ConfigError, match="tinyvr.*reference"):
        accuracy_reward(["x"], [GT_C], compat="r1")
    with pytest.raises(ConfigError, match="tinyvr.*reference"):
        format_reward(["x"], compat="r1")


def test_reward_modules_do_not_import_torch_or_transformers():
    code = (
        "import sys, tinyvr.rl.rewards, tinyvr.eval.extract, tinyvr.eval.aha;"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
