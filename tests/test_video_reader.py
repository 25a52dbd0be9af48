"""Video readers: metadata, random access exact against a sequential PyAV decode, bad input."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from vrshq.errors import VideoError
from vrshq.synthetic import SyntheticSpec, render_scene
from vrshq.video import (
    DecordVideoReader,
    FrameFolderReader,
    FrameIndexError,
    VideoInfo,
    open_video,
)


CONTAINERS = ["mp4", "webm", "mkv", "avi", "mov"]

# Encodings on which decord 0.6.0's own seeking returns the wrong frames (B-frames in AVI,
# open-GOP H.264), next to plain short-GOP ones; the reader must be exact on all of them.
TRICKY = {
    "h264-short-gop.mp4": ("mp4", "libx264", {"g": "10", "bf": "3"}),
    "vp9-short-gop.webm": ("webm", "libvpx-vp9", {"g": "10"}),
    "h264-open-gop.mkv": ("mkv", "libx264", {"x264-params": "keyint=10:open-gop=1:bframes=3"}),
    "mpeg4-bframes.avi": ("avi", "mpeg4", {"g": "10", "bf": "2"}),
    "h264-bframes.avi": ("avi", "libx264", {"g": "10", "bf": "3"}),
}


def sequential_decode(path: Path) -> np.ndarray:
    """Every frame of a plain in-order PyAV decode: the reference for frame i."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def assert_exact(reader, reference: np.ndarray, seed: int = 0) -> None:
    n = len(reference)
    assert len(reader) == n
    order = list(range(n))
    random.Random(seed).shuffle(order)
    for i in order:
        np.testing.assert_array_equal(reader.frame(i), reference[i], err_msg=f"frame {i}")
    for b in range(0, n, 7):
        chunk = order[b : b + 7]
        np.testing.assert_array_equal(reader.frames(chunk), reference[chunk])
    seen = []
    for i, frame in reader.iter_frames(step=-1, batch_size=5):
        np.testing.assert_array_equal(frame, reference[i], err_msg=f"reverse frame {i}")
        seen.append(i)
    assert seen == list(range(n - 1, -1, -1))
    for i, frame in reader.iter_frames(1, None, 3, batch_size=4):
        np.testing.assert_array_equal(frame, reference[i], err_msg=f"strided frame {i}")


# --- metadata and exactness ------------------------------------------------------------


@pytest.mark.parametrize("ext", CONTAINERS)
def test_metadata_per_container(make_video, ext):
    path = make_video(ext, num_frames=40, width=160, height=120, fps=10.0)
    with open_video(path) as reader:
        assert isinstance(reader, DecordVideoReader)
        assert (len(reader), reader.num_frames) == (40, 40)
        assert reader.fps == pytest.approx(10.0)
        assert (reader.width, reader.height) == (160, 120)
        assert reader.info() == VideoInfo(str(path), 40, reader.fps, 160, 120)
        frame = reader.frame(0)
        assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8


@pytest.mark.parametrize("ext", CONTAINERS)
def test_random_access_is_exact(make_video, ext):
    path = make_video(ext, num_frames=40, width=160, height=120, fps=10.0)
    with open_video(path) as reader:
        assert_exact(reader, sequential_decode(path))


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_random_access_is_exact_on_hard_encodings(make_video, name):
    ext, codec, options = TRICKY[name]
    path = make_video(ext, codec=codec, options=options, num_frames=48, width=96, height=64)
    with open_video(path) as reader:
        assert_exact(reader, sequential_decode(path), seed=len(name))


class _LyingSeek:
    """Wraps a decord reader so seek_accurate lands `shift` frames late, like decord on AVI."""

    def __init__(self, vr, shift: int) -> None:
        self._vr, self._shift = vr, shift

    def seek_accurate(self, pos: int) -> None:
        self._vr.seek_accurate(min(pos + self._shift, len(self._vr) - 1))

    def __getattr__(self, name):
        return getattr(self._vr, name)


def test_a_wrong_seek_is_detected_and_never_returned(make_video):
    path = make_video(
        "mp4", codec="libx264", options={"g": "8"}, num_frames=40, width=96, height=64
    )
    reference = sequential_decode(path)
    reader = DecordVideoReader(path)
    reader._vr = _LyingSeek(reader._vr, shift=2)
    for i in (30, 25, 12, 35, 3):
        np.testing.assert_array_equal(reader.frame(i), reference[i])
    assert not reader._seek_trusted  # it fell back to decoding forward from frame 0
    assert_exact(reader, reference)


def test_fps_override_and_folder_fps(synthetic_mp4, synthetic_frame_folder):
    assert open_video(synthetic_mp4, fps=25.0).fps == 25.0
    assert open_video(synthetic_frame_folder).fps == 30.0
    assert open_video(synthetic_frame_folder, fps=12.5).fps == 12.5


def test_index_errors(synthetic_mp4):
    reader = open_video(synthetic_mp4)
    for bad in (-1, 40, 1000):
        with pytest.raises(FrameIndexError, match=r"frame index .* out of range") as info:
            reader.frame(bad)
        assert str(synthetic_mp4) in str(info.value)
        assert isinstance(info.value, IndexError) and isinstance(info.value, VideoError)
    with pytest.raises(FrameIndexError):
        reader.frames([0, 40])
    with pytest.raises(TypeError):
        reader.frame(1.5)
    np.testing.assert_array_equal(reader.frame(np.int64(3)), reader.frame(3))


def test_iter_frames_ranges(synthetic_mp4):
    reader = open_video(synthetic_mp4)
    assert [i for i, _ in reader.iter_frames(35)] == list(range(35, 40))
    assert [i for i, _ in reader.iter_frames(10, 20, 4)] == [10, 14, 18]
    assert [i for i, _ in reader.iter_frames(5, None, -2)] == [5, 3, 1]
    assert [i for i, _ in reader.iter_frames(0, 1000, 13)] == [0, 13, 26, 39]
    with pytest.raises(ValueError):
        list(reader.iter_frames(step=0))


def test_frames_keeps_order_and_repeats(synthetic_mp4):
    reader = open_video(synthetic_mp4)
    batch = reader.frames([9, 2, 9, 0])
    assert batch.shape == (4, 120, 160, 3)
    for k, i in enumerate([9, 2, 9, 0]):
        np.testing.assert_array_equal(batch[k], reader.frame(i))
    assert reader.frames([]).shape == (0, 120, 160, 3)


def test_returned_frames_are_private_copies(synthetic_mp4):
    reader = open_video(synthetic_mp4)
    first = reader.frame(5)
    expected = first.copy()
    first[:] = 0  # a caller scribbling on its frame must not reach the reader's cache
    np.testing.assert_array_equal(reader.frame(5), expected)


def test_close_and_context_manager(synthetic_mp4):
    with open_video(synthetic_mp4) as reader:
        reader.frame(0)
    with pytest.raises(ValueError, match="closed"):
        reader.frame(1)


def test_importing_the_reader_does_not_import_decord():
    # sam2.build_sam can segfault when decord was imported first
    code = "import sys, vrshq.video; assert 'decord' not in sys.modules, 'decord imported'"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_iteration_holds_at_most_a_batch(make_video):
    path = make_video("mp4", num_frames=300, width=320, height=240, fps=30.0)
    frame_bytes = 320 * 240 * 3
    reader = open_video(path)
    tracemalloc.start()
    try:
        count = 0
        for _, frame in reader.iter_frames(batch_size=8):
            count += int(frame[0, 0, 0] >= 0)
        del frame  # a yielded frame is a view of its batch
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 300
    # numpy reports its buffers to tracemalloc: holding every frame would be ~300 frames
    assert peak < 24 * frame_bytes, f"peak {peak / frame_bytes:.1f} frames"
    # what stays is the one-frame cache and a CRC per frame
    assert current < 2 * frame_bytes, f"{current / frame_bytes:.1f} frames still referenced"


# --- frame folders ---------------------------------------------------------------------


def _write_frames(folder: Path, names: list[str], size=(32, 24)) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for k, name in enumerate(names):
        rgb = np.full((size[1], size[0], 3), k * 10, dtype=np.uint8)
        rgb[0, 0] = (k, 255 - k, 7)
        Image.fromarray(rgb).save(folder / name)
        frames.append(rgb)
    return frames


def test_frame_folder_reads_pngs_exactly(synthetic_frame_folder, synthetic_spec):
    reader = open_video(synthetic_frame_folder)
    assert isinstance(reader, FrameFolderReader)
    assert (len(reader), reader.width, reader.height) == (40, 160, 120)
    expected = [frame for frame, _ in render_scene(synthetic_spec)]
    for i in (0, 17, 39, 3):
        np.testing.assert_array_equal(reader.frame(i), expected[i])
    for i, frame in reader.iter_frames(step=5):
        np.testing.assert_array_equal(frame, expected[i])


def test_frame_folder_integer_and_natural_order(tmp_path):
    ints = ["10.png", "2.png", "1.png", "0003.png"]  # written in this order, frame k has value 10k
    frames = _write_frames(tmp_path / "ints", ints)
    reader = FrameFolderReader(tmp_path / "ints")
    order = [ints.index(n) for n in ["1.png", "2.png", "0003.png", "10.png"]]
    for i, k in enumerate(order):
        np.testing.assert_array_equal(reader.frame(i), frames[k])

    names = ["frame_10.jpg", "frame_9.png", "frame_1.png", "notes.txt", ".frame_0.png"]
    (tmp_path / "nat").mkdir()
    (tmp_path / "nat" / "notes.txt").write_text("not a frame")
    _write_frames(tmp_path / "nat", [n for n in names if n.endswith(("png", "jpg"))])
    reader = FrameFolderReader(tmp_path / "nat")
    assert [Path(f).name for f in reader.files] == ["frame_1.png", "frame_9.png", "frame_10.jpg"]


def test_frame_folder_converts_to_rgb(tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    gray = np.arange(24 * 32, dtype=np.uint8).reshape(24, 32)
    Image.fromarray(gray).save(folder / "0.png")
    Image.fromarray(np.dstack([gray, gray, gray, np.full_like(gray, 9)])).save(folder / "1.png")
    reader = FrameFolderReader(folder)
    for i in range(2):
        frame = reader.frame(i)
        assert frame.shape == (24, 32, 3)
        np.testing.assert_array_equal(frame[..., 1], gray)


def test_frame_folder_odd_size_names_the_file(tmp_path):
    folder = tmp_path / "sizes"
    _write_frames(folder, ["0.png", "1.png"])
    _write_frames(tmp_path / "other", ["2.png"], size=(40, 24))
    os.replace(tmp_path / "other" / "2.png", folder / "2.png")
    reader = FrameFolderReader(folder)
    assert (reader.width, reader.height) == (32, 24)
    reader.frame(1)
    with pytest.raises(VideoError, match=r"2\.png: frame size 40x24 differs .* 32x24"):
        reader.frame(2)


def test_frame_folder_corrupt_image_names_the_file(tmp_path):
    folder = tmp_path / "corrupt"
    _write_frames(folder, ["0.png", "1.png"])
    (folder / "2.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    reader = FrameFolderReader(folder)
    with pytest.raises(VideoError, match=r"2\.jpg: not a readable image"):
        reader.frame(2)
    (folder / "0.png").write_bytes(b"garbage")
    with pytest.raises(VideoError, match=r"0\.png: not a readable image"):
        FrameFolderReader(folder)


def test_frame_folder_permissions(tmp_path, monkeypatch):
    # Root reads any file whatever its mode, so the denial the OS would give is injected.
    from PIL import Image

    folder = tmp_path / "locked"
    _write_frames(folder, ["0.png", "1.png"])
    real_open = Image.open

    def guarded_open(fp, *args, **kwargs):
        if str(fp).endswith("1.png"):
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", guarded_open)
    reader = FrameFolderReader(folder)
    with pytest.raises(VideoError, match=r"1\.png: permission denied"):
        reader.frame(1)

    def denied_listing(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", denied_listing)
    monkeypatch.setattr(os, "listdir", denied_listing)
    with pytest.raises(VideoError, match="permission denied"):
        FrameFolderReader(folder)


# --- bad input -------------------------------------------------------------------------


def _truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _expect_video_error(path: Path, pattern: str) -> VideoError:
    with pytest.raises(VideoError, match=pattern) as info:
        reader = open_video(path)
        for _ in reader.iter_frames():  # a file that opens must then fail while decoding
            pass
    assert str(path) in str(info.value)
    return info.value


def test_missing_file(tmp_path):
    _expect_video_error(tmp_path / "nope.mp4", "file not found")
    with pytest.raises(VideoError, match="file not found"):
        DecordVideoReader(tmp_path / "nope.mp4")
    with pytest.raises(VideoError, match="folder not found"):
        FrameFolderReader(tmp_path / "nope")


def test_folder_without_frames(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no frames here")
    _expect_video_error(tmp_path / "empty", "no JPEG/PNG frames")


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "name, content, pattern",
    [
        ("text.mp4", b"hello, this is not a video\n", "not a readable video file"),
        ("random.mp4", bytes(random.Random(1).randbytes(50_000)), "not a readable video file"),
        ("random.webm", bytes(random.Random(2).randbytes(50_000)), "not a readable video file"),
        ("empty.mp4", b"", r"empty file \(0 bytes\)"),
        ("image.mp4", b"\x89PNG\r\n\x1a\n" + bytes(100), "single image"),
    ],
)
def test_not_a_video(tmp_path, name, content, pattern):
    path = tmp_path / name
    path.write_bytes(content)
    _expect_video_error(path, pattern)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ext", CONTAINERS)
@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.02])
def test_truncated_files(make_video, tmp_path, ext, fraction):
    src = make_video(ext, num_frames=40, width=160, height=120, fps=10.0)
    path = _truncate(src, tmp_path / f"cut.{ext}", fraction)
    _expect_video_error(path, "truncated")


@pytest.mark.timeout(30)
def test_truncated_faststart_mp4(tmp_path, synthetic_spec):
    path = tmp_path / "faststart.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for frame, _ in render_scene(synthetic_spec):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    assert len(open_video(path)) == 40
    _expect_video_error(_truncate(path, tmp_path / "cut.mp4", 0.6), "truncated")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ext", ["mp4", "mkv", "avi"])
def test_corrupt_payload(make_video, tmp_path, ext):
    # a damaged middle with intact container sizes: decoding must fail cleanly, not hang
    src = make_video(ext, num_frames=40, width=160, height=120, fps=10.0)
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(3)
    for start in (len(data) // 3, len(data) * 2 // 3):
        data[start : start + 3000] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    path = tmp_path / f"corrupt.{ext}"
    path.write_bytes(bytes(data))
    try:
        reader = open_video(path)
        frames = [frame for _, frame in reader.iter_frames()]
    except VideoError as e:
        assert str(path) in str(e)
        return
    # ffmpeg may conceal the damage; then the count must still be consistent
    assert len(frames) == len(reader)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_zero_frames(tmp_path, ext):
    path = tmp_path / f"noframes.{ext}"
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    container.start_encoding()
    container.close()
    _expect_video_error(path, "not a readable video file|no frames")


@pytest.mark.timeout(30)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "pipe.mp4"
    os.mkfifo(path)
    _expect_video_error(path, "not a regular file")


@pytest.mark.parametrize("bad_fps", [0.0, float("nan"), None, -5.0])
def test_zero_or_absent_fps(synthetic_mp4, monkeypatch, bad_fps):
    import decord

    real = decord.VideoReader

    class NoFps(real):
        def get_avg_fps(self):
            return bad_fps

    monkeypatch.setattr(decord, "VideoReader", NoFps)
    # the rate comes from the packets' timestamps first: take those away too (a raw stream)
    monkeypatch.setattr("vrshq.video.decord_reader.check_constant_rate", lambda path: None)
    with pytest.raises(VideoError, match="frame rate is zero or missing") as info:
        DecordVideoReader(synthetic_mp4)
    assert str(synthetic_mp4) in str(info.value)
    assert DecordVideoReader(synthetic_mp4, fps=7.0).fps == 7.0  # an explicit rate rescues it


@pytest.mark.parametrize("bad_fps", [0, -1.0, float("inf")])
def test_bad_fps_argument(synthetic_mp4, synthetic_frame_folder, bad_fps):
    with pytest.raises(VideoError, match="frame rate"):
        open_video(synthetic_mp4, fps=bad_fps)
    with pytest.raises(VideoError, match="frame rate"):
        open_video(synthetic_frame_folder, fps=bad_fps)


def test_directory_passed_as_video_file(tmp_path):
    with pytest.raises(VideoError, match="is a folder"):
        DecordVideoReader(tmp_path)


def test_odd_sized_frames_decode(make_video):
    # yuv420p needs even sizes for x264, but a frame folder can be any size
    folder = make_video("png", num_frames=3, width=33, height=21)
    assert open_video(folder).frame(2).shape == (21, 33, 3)
    with pytest.raises(ValueError, match="even frame size"):
        make_video("mp4", num_frames=3, width=33, height=21)


def test_spec_defaults_match_the_fixture(synthetic_spec):
    assert synthetic_spec == SyntheticSpec()
