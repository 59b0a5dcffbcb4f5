"""Video inputs for training and evaluation, decoded and encoded as few times as possible.

The vision tower is frozen in every stage of the published recipe, so its output for a video never
changes within a stage: `VideoInputs` computes it once per video and keeps it (the original ran
the tower 24 times per GRPO step). When the tower is trained (the tiny preset's pretraining), it
keeps the decoded pixels instead, so each epoch skips the video decode.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch


class _LRU:
    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes, self.items = max_bytes, 0, OrderedDict()

    def get(self, key):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        return None

    def put(self, key, value: torch.Tensor):
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return
        self.items[key] = value
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self.items.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()


class VideoInputs:
    """Turn video paths into the model's video input: `video_features` (frozen tower, cached) or
    `pixel_values` (trainable tower). Decode errors propagate as `VideoDecodeError`."""

    def __init__(self, model, processor, *, cache: bool = True, max_cache_gb: float = 4.0):
        self.model, self.processor = model, processor
        self.cache_enabled = cache
        self._cache = _LRU(int(max_cache_gb * 2**30))
        self.decoded = 0  # videos actually decoded (for tests and logs)

    @property
    def tower_trainable(self) -> bool:
        return any(p.requires_grad for p in self.model.vision_tower.parameters())

    def _key(self, path, bound):
        return (str(path), tuple(bound) if bound else None, self.processor.num_frames)

    def _pixels(self, path, bound=None) -> torch.Tensor:
        start, end = bound if bound else (None, None)
        self.decoded += 1
        if Path(path).is_dir():  # a folder of JPEG frames (MVBench TVQA, 3 fps)
            from tinyvr.data.video import read_frame_folder

            frames = read_frame_folder(path, self.processor.num_frames, start, end, fps=3)
            return self.processor.frames_to_pixel_values(frames)
        return self.processor.load_video(path, start=start, end=end)  # [T,3,S,S]

    def __call__(self, paths, bounds=None) -> dict:
        """Model kwargs for a batch of videos: {"video_features": [B,N,C]} or {"pixel_values": ...}."""
        bounds = bounds or [None] * len(paths)
        param = next(self.model.parameters())
        if self.tower_trainable:
            pix = []
            for p, b in zip(paths, bounds):
                key = ("pix",) + self._key(p, b)
                x = self._cache.get(key) if self.cache_enabled else None
                if x is None:
                    x = self._pixels(p, b)
                    if self.cache_enabled:  # full precision: a resumed run must see the same values
                        self._cache.put(key, x)
                pix.append(x.to(dtype=param.dtype))
            return {"pixel_values": torch.stack(pix).to(param.device)}
        feats = [None] * len(paths)
        todo = []
        for i, (p, b) in enumerate(zip(paths, bounds)):
            f = self._cache.get(("feat",) + self._key(p, b)) if self.cache_enabled else None
            if f is None:
                todo.append(i)
            else:
                feats[i] = f
        if todo:
            pix = torch.stack([self._pixels(paths[i], bounds[i]) for i in todo]).to(param.device, param.dtype)
            with torch.no_grad():
                out = self.model.vision_features(pix)  # [b, T*P', C]
            for j, i in enumerate(todo):
                feats[i] = out[j]
                if self.cache_enabled:
                    self._cache.put(("feat",) + self._key(paths[i], bounds[i]), out[j].detach())
        return {"video_features": torch.stack(feats).to(param.device)}
