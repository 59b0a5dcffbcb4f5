"""The embedded tokenizer (byte-level BPE trained here, deterministic) and tokenizer loading.

The tiny tokenizer behaves like Qwen2.5's where it matters to the pipeline: the same pre-tokenizer
split pattern (digits one by one, a leading space glued to the next word), byte-level so every
text round-trips, no BOS, and `<|endoftext|>` as its only special token, serving as EOS and PAD.
Two departures help a model that starts from scratch read answer letters: the reasoning tags are
atomic tokens, and a lone capital letter never carries the space before it (LONE_LETTER_SPACE), so
every answer letter, in every mode, is the very token of its option line.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterable

from tinyvr.constants import EOS_TOKEN, IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from tinyvr.errors import CheckpointError

DEFAULT_VOCAB_SIZE = 2048
MODEL_MAX_LENGTH = 3072  # the reference's tokenizer_model_max_length

# Qwen2's pre-tokenizer split pattern: contractions, words with one leading non-letter, single
# digits, punctuation runs, newlines, whitespace.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "white", "black",
            "gray", "brown", "cyan", "magenta"]
_SHAPES = ["circle", "square", "triangle", "star", "rectangle", "diamond", "ball", "box",
           "hexagon", "shape", "object", "dot"]
_DIRECTIONS = ["left", "right", "up", "down", "top", "bottom", "center", "middle", "corner",
               "upward", "downward", "leftward", "rightward", "clockwise", "counterclockwise"]
_MOTION = ["moves", "moving", "moved", "bounces", "rotates", "spins", "stops", "appears",
           "disappears", "changes", "collides", "hits", "touches", "grows", "shrinks", "stays",
           "falls", "rises", "turns", "follows", "passes", "crosses", "enters", "leaves"]
_TIME = ["first", "second", "third", "last", "before", "after", "then", "next", "finally",
         "earlier", "later", "while", "during", "beginning", "end", "start", "frame", "frames",
         "video", "clip", "time", "once", "twice", "again", "still", "until"]
_COUNTS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "how", "many", "number", "count", "times", "more", "less", "fewer", "most", "least",
           "same", "different", "each", "all", "none", "both"]
_GLUE = ["the", "a", "an", "of", "to", "in", "on", "at", "and", "or", "is", "are", "was", "were",
         "which", "what", "when", "where", "who", "does", "did", "do", "it", "its", "this", "that",
         "with", "from", "into", "by", "not", "no", "yes", "so", "because", "answer", "question",
         "option", "options", "correct", "wrong", "let", "me", "check", "wait", "think", "see",
         "look", "looks", "seems", "therefore", "colour", "color", "size", "speed", "fast", "slow",
         "fastest", "slowest", "biggest", "smallest", "large", "small", "direction", "position",
         "happens", "happened", "event", "order", "sequence", "shown", "show", "scene", "man",
         "woman", "person", "people", "animal", "dog", "cat", "car", "hand", "table", "room"]
_LETTERS = ["A", "B", "C", "D", "E", "F"]


def default_corpus() -> list[str]:
    """Training text for the embedded tokenizer: template strings, tags and synthetic-task words."""
    from tinyvr.data.template import OPTION_SUFFIX, REASON_SUFFIX, SYSTEM, build_prompt

    texts = [SYSTEM, REASON_SUFFIX, OPTION_SUFFIX, "USER: ", " ASSISTANT: ", "ASSISTANT:",
             "<think>", "</think>", "<answer>", "</answer>", "Options:", "Question:", "Answer:",
             "0 1 2 3 4 5 6 7 8 9 10 11 12 16 20 30 32 64 100"]
    texts += [f"{l}. " for l in _LETTERS] + [f"({l}) " for l in _LETTERS]
    texts += [f"<answer>{l}</answer>" for l in _LETTERS] + [f"<answer> {l} </answer>" for l in _LETTERS]
    words = _COLOURS + _SHAPES + _DIRECTIONS + _MOTION + _TIME + _COUNTS + _GLUE
    texts.append(" ".join(words))
    texts.append(" ".join(w.capitalize() for w in words))
    # Sentences like the synthetic tasks' questions and reasoning, so whole words become tokens.
    for (c, s), m, d in zip(itertools.product(_COLOURS, _SHAPES), itertools.cycle(_MOTION),
                            itertools.cycle(_DIRECTIONS)):
        texts.append(f"The {c} {s} {m} {d}. Which {s} {m} first? How many times does it {m.rstrip('s')}?")
    options = "\n".join(f"{l}. {c} {s}" for l, c, s in zip(_LETTERS[:4], _COLOURS, _SHAPES))
    question = f"Which object moves first?\nOptions:\n{options}"
    texts.append(build_prompt(question + " " + REASON_SUFFIX,
                              "<think>The red circle moves first, then the green square. Wait, let me "
                              "check again. Yes.</think> <answer>A</answer>"))
    texts.append(build_prompt(question + "\n" + OPTION_SUFFIX, "A"))
    return texts


# A space before a lone capital letter is cut off it, so " B" (the option-mode answer after
# "ASSISTANT:", or "option B" in reasoning) is a space, then the same "B" token as the option line
# "B. red". With Qwen2's pattern alone they are two unrelated ids, and a from-scratch model must learn
# that mapping before it can copy a letter from the options (Qwen2.5 knows it from pretraining).
LONE_LETTER_SPACE = r" (?=\p{Lu}(?![\p{L}\p{N}]))"


def _pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LONE_LETTER_SPACE), behavior="isolated", invert=False),
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


REASONING_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def _without_tags(text: str) -> str:
    for tag in REASONING_TAGS:
        text = text.replace(tag, "\n")
    return text


def template_texts() -> list[str]:
    """The fixed text of every prompt (system line, turn markers, instructions). A data corpus holds
    only questions and answers, so without these BPE spells "ASSISTANT" letter by letter, and the
    letters A and E of "USER: ... ASSISTANT:" sit right before every answer as the very tokens of
    option letters A and E."""
    from tinyvr.data.template import ASSISTANT, OPTION_SUFFIX, REASON_SUFFIX, SYSTEM, USER

    return [f"{SYSTEM} {USER}", USER, f" {ASSISTANT}", OPTION_SUFFIX, REASON_SUFFIX]


def build_tiny_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = DEFAULT_VOCAB_SIZE):
    """Train a byte-level BPE tokenizer (deterministic) -> transformers PreTrainedTokenizerFast.

    `vocab_size` is an upper bound: a small corpus stops earlier. `<|endoftext|>` is id 0 and the
    only special token (EOS = PAD); no BOS and no unknown token (every byte has a token). The four
    reasoning tags are added (non-special) tokens: without them BPE glues the answer letter onto
    the tag (`>C`), a token the 16 cold-start samples show a from-scratch model only a few times;
    with them the letter after `<answer>` is the same token as the option letters in the prompt.
    The template's text (`template_texts`) is added once per corpus text, as often as it occurs in
    training, so its words become whole tokens whatever the corpus.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(default_corpus() if corpus is None else corpus)
    texts += template_texts() * len(texts)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(REASONING_TAGS), special_tokens=[EOS_TOKEN], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is unknown
    )
    # the tags are cut out of the training text so no merge glues a word onto them
    tok.train_from_iterator([_without_tags(t) for t in texts], trainer=trainer)
    tok.add_tokens([AddedToken(t, normalized=False) for t in REASONING_TAGS])
    return _finish(PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN,
                                           clean_up_tokenization_spaces=False))


def _finish(tokenizer):
    """Apply the pipeline's conventions: EOS = PAD = <|endoftext|>, right padding, no BOS."""
    if tokenizer.convert_tokens_to_ids(EOS_TOKEN) in (None, tokenizer.unk_token_id):
        raise CheckpointError(f"tokenizer has no '{EOS_TOKEN}' token (needed as EOS and PAD)")
    tokenizer.eos_token = EOS_TOKEN
    tokenizer.pad_token = EOS_TOKEN
    tokenizer.padding_side = "right"
    tokenizer.model_max_length = MODEL_MAX_LENGTH
    return tokenizer


_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")


def load_tokenizer(path):
    """Load a saved tokenizer folder (ours, or a Qwen2.5 one) from disk only."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: tokenizer folder not found")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise CheckpointError(f"{path}: no tokenizer files (expected one of {', '.join(_TOKENIZER_FILES)})")
    from transformers.utils import logging as hf_logging

    # AutoTokenizer also reads the folder's config.json (our model type, unknown to it) and warns
    # about it; the tokenizer files are all it needs, so that warning is noise here
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot load tokenizer ({e})") from e
    finally:
        hf_logging.set_verbosity(level)
    return _finish(tokenizer)


def tokenizer_image_token(prompt: str, tokenizer) -> list[int]:
    """Ids of `prompt` with each `<image>` replaced by IMAGE_TOKEN_INDEX (-200) (§1.5).

    Pieces between placeholders are tokenised separately, without added special tokens.
    """
    ids: list[int] = []
    for i, piece in enumerate(prompt.split(IMAGE_TOKEN)):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        if piece:
            ids.extend(tokenizer.encode(piece, add_special_tokens=False))
    return ids
