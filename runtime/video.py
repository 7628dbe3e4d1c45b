"""Decode a video with PyAV into RGB frames sampled at a fixed rate.

Frames are picked by presentation time: one per 1/fps seconds (the first frame at or after each
sample time), and videos longer than max_frames / fps are sampled uniformly over their
duration instead, so at most max_frames frames come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from runtime.errors import HandheldError


@dataclass(frozen=True)
class VideoConfig:
    fps: float = 1.0  # frames sampled per second of video
    max_frames: int = 400  # longer videos are sampled uniformly down to this many frames
    decode_size: int = (
        384  # frames are decoded to decode_size x decode_size RGB (aspect squashed, as SigLIP's processor does)
    )

    def __post_init__(self):
        if not 0 < self.fps <= 60:
            raise HandheldError(f"fps={self.fps} is out of range", "use a sampling rate in (0, 60] frames per second")
        if self.max_frames < 1:
            raise HandheldError(f"max_frames={self.max_frames}", "use at least 1 frame")
        if self.decode_size < 14:
            raise HandheldError(f"decode_size={self.decode_size} is too small", "use at least the encoders' patch size")


@dataclass
class Video:
    frames: np.ndarray  # [T, size, size, 3] uint8 RGB
    times: list[float]  # presentation time of each frame, seconds
    duration: float  # seconds
    source_fps: float
    path: str


def _open(path: Path):
    import av

    if not path.is_file():
        raise HandheldError(
            f"video {path} does not exist", "pass a path to a video file PyAV/FFmpeg can read (mp4, mkv, webm, ...)"
        )
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise HandheldError(
            f"cannot read {path} as a video: {err}", "pass a video file PyAV/FFmpeg can decode"
        ) from None
    if not container.streams.video:
        container.close()
        raise HandheldError(f"{path} has no video stream", "pass a file with a video track")
    fmt = container.format.name or ""
    if fmt == "image2" or fmt.endswith("_pipe"):
        container.close()
        raise HandheldError(
            f"{path} is a still image ({fmt}), not a video",
            "pass a video file (mp4, mkv, webm, ...); for photos use `handheld segment`",
        )
    return container


def probe(path: str | Path) -> None:
    """Open and close: a HandheldError for anything that is not a readable video."""
    _open(Path(path).expanduser()).close()


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base is microseconds
    return None


def sample_times(duration: float, cfg: VideoConfig) -> np.ndarray:
    """Sample times in seconds: every 1/fps, or max_frames spread uniformly over a long video."""
    n = max(1, int(np.floor(duration * cfg.fps + 1e-9)))
    if n <= cfg.max_frames:
        return np.arange(n) / cfg.fps
    return (np.arange(cfg.max_frames) + 0.5) * duration / cfg.max_frames


def decode(path: str | Path, cfg: VideoConfig) -> Video:
    """Sampled RGB frames [T, decode_size, decode_size, 3]; HandheldError for unreadable or empty videos."""
    import av

    path = Path(path).expanduser()
    container = _open(path)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    duration = _duration(container, stream)
    targets = sample_times(duration, cfg) if duration else None
    frames, times = [], []
    size = cfg.decode_size
    try:
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else len(times) / float(stream.average_rate or 25)
            if targets is None:  # unknown duration: every 1/fps up to max_frames
                due = len(times) / cfg.fps
            elif len(times) < len(targets):
                due = targets[len(times)]
            else:
                break
            if t + 1e-6 >= due:
                frames.append(frame.to_ndarray(format="rgb24", width=size, height=size))
                times.append(t)
                if len(frames) == cfg.max_frames:
                    break
    except av.error.FFmpegError as err:
        if not frames:
            raise HandheldError(
                f"cannot decode {path}: {err}", "re-encode the video (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)"
            ) from None
    finally:
        container.close()
    if not frames:
        raise HandheldError(f"{path} has no decodable video frames", "pass a video with at least one frame")
    fps = float(stream.average_rate) if stream.average_rate else 0.0
    return Video(np.stack(frames), times, duration or times[-1], fps, str(path))


def resize_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 RGB [T, H, W, 3] -> fp32 pixels [T, 3, size, size] in [0, 1] (bilinear, antialiased)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0.0, 1.0).contiguous()  # NCHW-contiguous: ExecuTorch reads inputs as dense, ignoring strides
