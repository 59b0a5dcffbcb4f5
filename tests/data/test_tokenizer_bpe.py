"""tinyvr.data.tokenizer: the embedded byte-level BPE, loading, and <image> splitting."""

from __future__ import annotations

import pytest

from tinyvr.constants import EOS_TOKEN, IMAGE_TOKEN_INDEX
from tinyvr.data.template import build_prompt
from tinyvr.data.tokenizer import build_tiny_tokenizer, load_tokenizer, tokenizer_image_token
from tinyvr.errors import CheckpointError

TEXTS = [
    "plain words",
    "Ünïcödé — naïve café, 日本語のテキスト, Привет",
    "emoji 🎉🧠👩‍👩‍👧 and flags 🇫🇷",
    "   leading, trailing and    inner runs of spaces   ",
    "tabs\tand\nnewlines\n\n\r\nmixed \t \n",
    "<think>The red circle moves left.</think> <answer>A</answer>",
    "digits 0123456789 and 3.14159",
    "\x00 control \x07 bytes \x7f",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tiny_tokenizer, text):
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    assert tiny_tokenizer.decode(ids, skip_special_tokens=False) == text


def test_special_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    assert tok.eos_token == tok.pad_token == EOS_TOKEN
    assert tok.eos_token_id == tok.pad_token_id == tok.convert_tokens_to_ids(EOS_TOKEN)
    assert tok.all_special_tokens == [EOS_TOKEN]
    assert tok.bos_token is None and tok.unk_token is None
    assert tok.padding_side == "right"
    # no BOS/EOS added by default, and the literal string is the EOS token (as Qwen2.5)
    assert tok.encode("hi") == tok.encode("hi", add_special_tokens=False)
    assert tok.encode("a" + EOS_TOKEN, add_special_tokens=False)[-1] == tok.eos_token_id


def test_qwen_style_pretokenisation(tiny_tokenizer):
    assert len(tiny_tokenizer.encode("12345", add_special_tokens=False)) == 5  # one digit per token
    # the corpus words became whole tokens (space glued in front)
    assert tiny_tokenizer.tokenize(" circle") == ["Ġcircle"]


@pytest.mark.parametrize("answer", ["A", "<answer>B</answer>", "<think>red, then blue</think> <answer>C</answer>",
                                    "It moves left.", "42 times"])
def test_split_before_answer_space_matches_joint_tokenisation(tiny_tokenizer, answer):
    """Why the processor may tokenise prompt and answer apart: the ids equal the joint text's."""
    prompt = build_prompt("Q")
    joint = tiny_tokenizer.encode(prompt + " " + answer, add_special_tokens=False)
    apart = (tiny_tokenizer.encode(prompt, add_special_tokens=False)
             + tiny_tokenizer.encode(" " + answer, add_special_tokens=False))
    assert joint == apart


def test_deterministic(tiny_tokenizer):
    again = build_tiny_tokenizer()
    assert again.backend_tokenizer.to_str() == tiny_tokenizer.backend_tokenizer.to_str()


def test_custom_corpus_and_vocab_bound():
    tok = build_tiny_tokenizer(["the quick brown fox jumps over the lazy dog"] * 5, vocab_size=280)
    assert len(tok) <= 280
    assert tok.decode(tok.encode("ok 🦊")) == "ok 🦊"  # bytes outside the corpus still encode


def test_save_and_load(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    for text in TEXTS:
        assert loaded.encode(text, add_special_tokens=False) == tiny_tokenizer.encode(text, add_special_tokens=False)
    assert loaded.eos_token == loaded.pad_token == EOS_TOKEN
    assert len(loaded) == len(tiny_tokenizer)


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        load_tokenizer(tmp_path)


def test_tokenizer_image_token(tiny_tokenizer):
    tok = tiny_tokenizer

    def enc(s):
        return tok.encode(s, add_special_tokens=False)

    assert tokenizer_image_token("ab <image>\ncd", tok) == enc("ab ") + [IMAGE_TOKEN_INDEX] + enc("\ncd")
    assert tokenizer_image_token("<image>x", tok) == [IMAGE_TOKEN_INDEX] + enc("x")
    assert tokenizer_image_token("<image><image>", tok) == [IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX]
    assert tokenizer_image_token("none", tok) == enc("none")


def test_reasoning_tags_are_atomic_and_the_answer_letter_is_the_option_letter(tiny_tokenizer, tmp_path):
    tok = tiny_tokenizer
    pieces = [tok.decode([i]) for i in tok.encode("</think> <answer>C</answer>", add_special_tokens=False)]
    assert pieces == ["</think>", " ", "<answer>", "C", "</answer>"]
    option_letter = tok.encode("Options:\nC. red", add_special_tokens=False)[2]
    assert tok.decode([option_letter]) == "C"
    assert tok.encode("<answer>C</answer>", add_special_tokens=False)[1] == option_letter
    # option mode: the answer after "ASSISTANT:" is " C"; the space is cut off the letter
    option_answer = tok.encode(build_prompt("Q") + " C", add_special_tokens=False)[-2:]
    assert [tok.decode([i]) for i in option_answer] == [" ", "C"] and option_answer[1] == option_letter
    assert tok.tokenize(" Cat") == ["ĠCat"]  # only a lone letter: words keep their space
    tok.save_pretrained(tmp_path)
    assert load_tokenizer(tmp_path).encode("<think>x</think>", add_special_tokens=False) == \
        tok.encode("<think>x</think>", add_special_tokens=False)


def test_template_words_are_whole_tokens_even_when_the_corpus_lacks_them():
    # A data corpus holds no "USER:"/"ASSISTANT:"; before the fix they were spelled letter by letter,
    # so option letters A and E stood right before every answer.
    tok = build_tiny_tokenizer(["Which option is red?\nOptions:\nA. red\nB. blue"] * 20)
    prompt = tok.encode(build_prompt("Which option is red?\nOptions:\nA. red\nB. blue"), add_special_tokens=False)
    pieces = [tok.decode([i]) for i in prompt]
    assert pieces[-2:] == [" ASSISTANT", ":"]
    assert " USER" in pieces
    letters = {tok.convert_tokens_to_ids(c) for c in "ABCDE"}
    after_options = prompt[len(prompt) - 1 - pieces[::-1].index("B") + 1:]  # after the last option letter
    assert not letters & set(after_options)
