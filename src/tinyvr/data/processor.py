"""One object that turns videos and text into model inputs, and generated ids back into text.

Pixels follow SigLIP's processor as the reference uses it (§3.2): squash-resize every frame to
S×S with PIL bicubic on uint8, x/255, (x - 0.5)/0.5. Text follows the `qwen2_base` template with
one `<image>` placeholder id (-200) per sample (§1.5, §4).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from tinyvr.constants import EOS_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from tinyvr.data import template
from tinyvr.data.tokenizer import load_tokenizer, tokenizer_image_token
from tinyvr.data.video import frame_indices, read_video
from tinyvr.errors import CheckpointError, DataError

PROCESSOR_CONFIG = "processor_config.json"
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
DEFAULT_MAX_LENGTH = 3072  # the reference's tokenizer_model_max_length


def _normalise_lut(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """float32 [256, 3]: the value each uint8 level of each channel maps to (rescale, normalise).

    Computed in float64 like HF's processor, then rounded once to float32.
    """
    v = np.arange(256, dtype=np.float64)[:, None] / 255.0
    return ((v - np.asarray(mean)) / np.asarray(std)).astype(np.float32)


class Processor:
    """Videos + text -> model inputs (`input_ids`, `attention_mask`, `pixel_values`, `labels`)."""

    def __init__(self, tokenizer, image_size: int, num_frames: int, max_length: int = DEFAULT_MAX_LENGTH,
                 image_mean: Sequence[float] = IMAGE_MEAN, image_std: Sequence[float] = IMAGE_STD):
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.num_frames = int(num_frames)
        self.max_length = int(max_length)
        self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)
        self._lut = _normalise_lut(self.image_mean, self.image_std)
        self._same_channels = bool((self._lut == self._lut[:, :1]).all())
        self.num_truncated = 0  # samples cut to max_length so far (each also warns)

    # -- ids ------------------------------------------------------------------------------------

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(EOS_TOKEN)

    @property
    def pad_token_id(self) -> int:
        return self.eos_token_id  # PAD == EOS, as Qwen2.5

    # -- video ----------------------------------------------------------------------------------

    def frames_to_pixel_values(self, frames) -> torch.Tensor:
        """uint8 [T, H, W, 3] (numpy or torch) -> float32 [T, 3, S, S] in [-1, 1]."""
        if isinstance(frames, torch.Tensor):
            frames = frames.numpy()
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
        s = self.image_size
        if frames.shape[1:3] != (s, s):
            from PIL import Image

            # Squash (no aspect ratio, no crop) with PIL bicubic on uint8, as the reference.
            frames = np.stack([np.asarray(Image.fromarray(f).resize((s, s), Image.BICUBIC, reducing_gap=None))
                               for f in frames])
        # Channels first while still uint8 (4x fewer bytes to move), then one table lookup.
        chw = np.ascontiguousarray(frames.transpose(0, 3, 1, 2))  # [T, 3, S, S]
        if self._same_channels:
            x = np.take(self._lut[:, 0], chw)
        else:
            x = np.stack([np.take(self._lut[:, c], chw[:, c]) for c in range(3)], axis=1)
        return torch.from_numpy(x)

    def load_video(self, path, start: float | None = None, end: float | None = None) -> torch.Tensor:
        """Decode `num_frames` frames (reference sampling) -> float32 [T, 3, S, S]."""
        return self.frames_to_pixel_values(read_video(path, self.num_frames, start=start, end=end))

    def _pixel_values(self, video) -> torch.Tensor:
        if isinstance(video, torch.Tensor) and video.is_floating_point():
            return video  # already [T, 3, S, S]
        if isinstance(video, (str, Path)):
            return self.load_video(video)
        if len(video) != self.num_frames:  # a whole decoded clip: sample it like a file
            video = video[frame_indices(len(video), self.num_frames)]
        return self.frames_to_pixel_values(video)

    # -- text -----------------------------------------------------------------------------------

    def encode_prompt(self, question: str) -> list[int]:
        """Generation prompt ids (ending at "ASSISTANT:") with one IMAGE_TOKEN_INDEX placeholder."""
        return tokenizer_image_token(template.build_prompt(question), self.tokenizer)

    def encode_conversation(self, conversations: Sequence[dict]) -> tuple[list[int], list[int]]:
        """(input_ids, labels) of a LLaVA conversation for SFT.

        Only each answer (with the space before it, which the first answer token carries) and its
        closing <|endoftext|> are supervised; everything else is IGNORE_INDEX. This is the net
        effect of the reference's masking (§4.3), built here by tokenising the prompt pieces and the
        answers separately and concatenating the ids, so no token-boundary heuristic can drop a
        sample. Longer than `max_length`: cut with a warning (`num_truncated` counts them); a cut
        that removes the video placeholder or every answer token raises DataError.
        """
        try:
            segments = template.conversation_segments(conversations)
        except ValueError as e:
            raise DataError("<conversation>", str(e), field="conversations") from e
        ids: list[int] = []
        labels: list[int] = []
        for piece, supervised in segments:
            part = [self.eos_token_id] if piece == EOS_TOKEN else tokenizer_image_token(piece, self.tokenizer)
            ids += part
            labels += part if supervised else [IGNORE_INDEX] * len(part)
        if len(ids) > self.max_length:
            self.num_truncated += 1
            warnings.warn(f"sample of {len(ids)} tokens cut to max_length={self.max_length} "
                          f"({self.num_truncated} cut so far)", stacklevel=2)
            ids, labels = ids[: self.max_length], labels[: self.max_length]
            if IMAGE_TOKEN_INDEX not in ids:
                raise DataError("<conversation>", f"the video placeholder lies beyond max_length={self.max_length}",
                                field="conversations")
            if all(l == IGNORE_INDEX for l in labels):
                raise DataError("<conversation>", f"no answer token left within max_length={self.max_length}",
                                field="conversations")
        return ids, labels

    # -- batching -------------------------------------------------------------------------------

    def collate(self, batch: Sequence[dict], padding_side: str = "right") -> dict:
        """Pad a list of {"input_ids", "labels"?, "pixel_values"?} -> dict of tensors.

        attention_mask comes from the lengths (PAD == EOS, so `ids != pad` would hide real EOS).
        """
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if not batch:
            raise ValueError("empty batch")
        with_labels = ["labels" in b for b in batch]
        if any(with_labels) and not all(with_labels):
            raise ValueError("either every item has labels or none")
        seqs = [torch.as_tensor(b["input_ids"], dtype=torch.long) for b in batch]
        width = max(len(s) for s in seqs)
        out = {
            "input_ids": torch.full((len(batch), width), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(batch), width), dtype=torch.long),
        }
        if with_labels[0]:
            out["labels"] = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        for i, (b, s) in enumerate(zip(batch, seqs)):
            span = slice(0, len(s)) if padding_side == "right" else slice(width - len(s), width)
            out["input_ids"][i, span] = s
            out["attention_mask"][i, span] = 1
            if "labels" in out:
                lab = torch.as_tensor(b["labels"], dtype=torch.long)
                if len(lab) != len(s):
                    raise ValueError(f"item {i}: {len(lab)} labels for {len(s)} input ids")
                out["labels"][i, span] = lab
        if all("pixel_values" in b for b in batch):
            out["pixel_values"] = torch.stack([torch.as_tensor(b["pixel_values"]) for b in batch])
        return out

    def __call__(self, videos=None, text: str | Sequence[str] | None = None, conversations=None,
                 padding_side: str | None = None) -> dict:
        """Batch inputs. `text`: questions (generation prompts, left-padded by default);
        `conversations`: LLaVA conversations (training ids + labels, right-padded by default);
        `videos`: one per sample, each a path, uint8 frames [T, H, W, 3] (sampled to num_frames
        by the reference rule) or pixel values [T, 3, S, S] -> `pixel_values` [B, T, 3, S, S]."""
        if (text is None) == (conversations is None) and videos is None:
            raise ValueError("give text or conversations (or videos)")
        if text is not None and conversations is not None:
            raise ValueError("give either text (generation) or conversations (training), not both")
        items: list[dict] = []
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            items = [{"input_ids": self.encode_prompt(q)} for q in texts]
            padding_side = padding_side or "left"
        elif conversations is not None:
            convs = list(conversations)
            if convs and isinstance(convs[0], dict):  # a single conversation
                convs = [convs]
            for c in convs:
                ids, labels = self.encode_conversation(c)
                items.append({"input_ids": ids, "labels": labels})
            padding_side = padding_side or "right"
        out = self.collate(items, padding_side) if items else {}
        if videos is not None:
            vids = [videos] if isinstance(videos, (str, Path)) else list(videos)
            if items and len(vids) != len(items):
                raise ValueError(f"{len(vids)} videos for {len(items)} samples")
            out["pixel_values"] = torch.stack([self._pixel_values(v) for v in vids])
        return out

    # -- decoding -------------------------------------------------------------------------------

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of `ids`; placeholder/ignore ids (negative) are dropped."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode([i for i in ids if i >= 0], skip_special_tokens=skip_special_tokens,
                                     clean_up_tokenization_spaces=False)

    def batch_decode(self, batch, skip_special_tokens: bool = True) -> list[str]:
        if isinstance(batch, torch.Tensor):
            batch = batch.tolist()
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    # -- persistence ----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"processor_class": "tinyvr.Processor", "image_size": self.image_size,
                "num_frames": self.num_frames, "max_length": self.max_length,
                "image_mean": list(self.image_mean), "image_std": list(self.image_std),
                "resample": "bicubic"}

    def save_pretrained(self, save_directory) -> Path:
        """Write the tokenizer files and processor_config.json."""
        d = Path(save_directory)
        d.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(d))
        (d / PROCESSOR_CONFIG).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return d

    @classmethod
    def from_pretrained(cls, directory, **overrides) -> "Processor":
        """Load a saved processor; `overrides` (image_size, num_frames, ...) win over the file and
        supply the values when a folder holds only a tokenizer."""
        d = Path(directory)
        cfg_file = d / PROCESSOR_CONFIG
        cfg = {}
        if cfg_file.is_file():
            try:
                cfg = json.loads(cfg_file.read_text())
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{cfg_file}: invalid JSON ({e.msg}, line {e.lineno})") from e
        cfg.update(overrides)
        missing = [k for k in ("image_size", "num_frames") if k not in cfg]
        if missing:
            raise CheckpointError(f"{d}: no {PROCESSOR_CONFIG} and no {', '.join(missing)} given")
        kwargs = {k: cfg[k] for k in ("image_size", "num_frames", "max_length", "image_mean", "image_std")
                  if k in cfg}
        return cls(load_tokenizer(d), **kwargs)
