"""video_decode: 16 frames out of a 30 s clip (128x128, 30 fps, 900 frames, H.264 .mp4).

tinyvr: `tinyvr.data.video.read_video(path, 16)`: demux the packets (no decoding) to learn the
timestamps and keyframes, then decode only around the 16 wanted frames (seeking to the keyframe
before a wanted frame when that skips frames), converting only those 16 to RGB arrays.
Original (spec 3.1, 10.1 item 3): decode every frame to an RGB array, stack them as float32
[T, 3, H, W] (what pytorchvideo's `get_clip(0, duration)` returns), then pick the 16
`linspace` indices. Both use PyAV with the same decoder settings.

The headline clip is encoded the way `write_video` encodes by default (libx264's default keyframe
interval of 250 frames: 4 keyframes in 900 frames), so seeking helps little and most of the gain
is converting 16 frames instead of 900. A second clip with a keyframe every 30 frames (1 s, as
many streaming encodes) is measured too: there tinyvr also skips most of the decoding.
"""

from __future__ import annotations

import benchlib as B

TARGET = 5.0
NUM_FRAMES = 16
SECONDS, FPS, SIZE = 30, 30, 128


def make_clip(path, gop=None):
    """A 30 s clip of moving shapes on a gradient (deterministic)."""
    import numpy as np

    from tinyvr.data.video import write_video

    if path.exists():
        return path
    n = SECONDS * FPS
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    base = np.stack([xx * 2, yy * 2, (xx + yy)], -1).astype(np.uint8)
    frames = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for t in range(n):
        f = base.copy()
        x = int((SIZE - 24) * (0.5 + 0.5 * np.sin(t / 25)))
        y = int((SIZE - 24) * (0.5 + 0.5 * np.cos(t / 40)))
        f[y: y + 24, x: x + 24] = (255, 40, 40)
        c = (t * 3) % (SIZE - 16)
        f[SIZE - 20: SIZE - 4, c: c + 16] = (40, 40, 255)
        frames[t] = f
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    write_video(tmp, frames, FPS, gop=gop, options={"crf": "18", "preset": "veryfast"})
    tmp.replace(path)
    return path


def decode_all_then_sample(path, num_frames):
    """The original's path: every frame -> RGB -> float32 [T, 3, H, W], then linspace indices."""
    import av
    import numpy as np
    import torch

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    video = torch.from_numpy(np.stack(frames)).float().permute(0, 3, 1, 2)  # [T, 3, H, W] float32 0..255
    idx = np.linspace(0, len(video) - 1, num_frames, dtype=int)
    return video[idx]


def _keyframes(path):
    import av

    with av.open(str(path)) as c:
        pk = [p for p in c.demux(video=0) if p.size]
        return len(pk), sum(p.is_keyframe for p in pk)


def _measure(path, repeats):
    import numpy as np

    from tinyvr.data.video import read_video

    def tinyvr(r):
        return read_video(path, NUM_FRAMES)

    def original(r):
        return decode_all_then_sample(path, NUM_FRAMES)

    a, b = tinyvr(0), original(0)
    # the same frames: tinyvr's uint8 HWC vs the original's float CHW
    assert np.array_equal(a.transpose(0, 3, 1, 2).astype(np.float32), b.numpy()), "frames differ"
    times = B.interleaved({"tinyvr": tinyvr, "original": original}, repeats)
    res = {k: B.summary(v, NUM_FRAMES, "frames") for k, v in times.items()}
    for v in res.values():
        v.pop("results", None)
    ratio = res["tinyvr"]["frames_per_s"] / res["original"]["frames_per_s"]
    ratio_cpu = res["tinyvr"]["frames_per_cpu_s"] / res["original"]["frames_per_cpu_s"]
    n_frames, n_key = _keyframes(path)
    return ratio, res, {"frames": n_frames, "keyframes": n_key, "ratio_cpu_time": ratio_cpu}


def run(quick: bool = False) -> dict:
    B.setup_torch(0)
    repeats = 3 if quick else 7
    B.OUT_DIR.mkdir(parents=True, exist_ok=True)
    clip = make_clip(B.OUT_DIR / f"clip_{SECONDS}s_{SIZE}px_{FPS}fps.mp4")
    clip30 = make_clip(B.OUT_DIR / f"clip_{SECONDS}s_{SIZE}px_{FPS}fps_gop30.mp4", gop=30)
    ratio, res, info = _measure(clip, repeats)
    ratio30, res30, info30 = _measure(clip30, repeats)
    print(f"video_decode: {NUM_FRAMES} of {info['frames']} frames ({info['keyframes']} keyframes): tinyvr "
          f"{res['tinyvr']['frames_per_s']:.0f} frames/s ({res['tinyvr']['median_wall_s'] * 1000:.0f} ms), original "
          f"{res['original']['frames_per_s']:.0f} frames/s ({res['original']['median_wall_s'] * 1000:.0f} ms) "
          f"-> {ratio:.2f}x (target >= {TARGET}x; by CPU time {info['ratio_cpu_time']:.2f}x)")
    print(f"video_decode, keyframe every 30 frames ({info30['keyframes']} keyframes): tinyvr "
          f"{res30['tinyvr']['frames_per_s']:.0f} frames/s, original {res30['original']['frames_per_s']:.0f} "
          f"frames/s -> {ratio30:.2f}x")
    return {
        "ratio": ratio, "target": TARGET, "passed": ratio >= TARGET, "unit": "sampled frames/s",
        "ratio_cpu_time": info["ratio_cpu_time"],
        "tinyvr": res["tinyvr"], "baseline": res["original"], "clip": {"path": str(clip.relative_to(B.ROOT)), **info},
        "gop30": {"ratio": ratio30, "tinyvr": res30["tinyvr"], "baseline": res30["original"],
                  "clip": {"path": str(clip30.relative_to(B.ROOT)), **info30}},
        "setup": {"seconds": SECONDS, "fps": FPS, "size": SIZE, "num_frames": NUM_FRAMES, "repeats": repeats,
                  "codec": "libx264 crf 18 veryfast, yuv420p"},
    }
