"""Tests of `transformers_v2l.video_io`: sampling rule, decoding of real and hazardous clips, spans, chunks."""

from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures.videos import frame_index_of, write_video
from transformers_v2l.errors import EmptyVideoError, InvalidArgumentError, VideoDecodeError
from transformers_v2l.video_io import check_video_source, iter_video_chunks, load_video, probe_video
from transformers_v2l.video_sampling import FrameTimeline, sample_frame_indices

FIXTURE_A = Path(__file__).resolve().parent / "data" / "frames2lora" / "fixture-A"


def reference_frames(path, indices=()) -> tuple[int, dict[int, np.ndarray]]:
    """Reference decode, as `transformers` reads videos: `(frame count, {index: frame})` for `indices`."""
    import av

    wanted, frames, count = set(indices), {}, 0
    with av.open(str(path)) as container:
        for count, frame in enumerate(container.decode(video=0), start=1):
            if count - 1 in wanted:
                frames[count - 1] = frame.to_ndarray(format="rgb24")
    return count, frames


def official_indices(
    total: int, fps: float, num_frames: int, target_fps: float = 1.0, skip_secs: float = 1.0
):
    """The SmolVLM2 rule as written in transformers 5.23 (`SmolVLMVideoProcessor.sample_frames`)."""
    duration = total / fps
    desired = max(1, min(round(target_fps * duration), num_frames))
    start, end = 0, total - 1
    if skip_secs > 0 and (duration - 2 * skip_secs) > (num_frames * target_fps):
        start, end = int(skip_secs * fps), int(total - skip_secs * fps)
    start, end = max(0, start), min(end, total - 1)
    if start >= end:
        start, end = 0, total - 1
    return np.unique(np.linspace(start, end, desired, dtype=int)).tolist()


# ---- sampling rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "total, fps, num_frames",
    [
        (64, 4.0, 12),
        (1, 30.0, 12),
        (2, 30.0, 12),
        (120, 30000 / 1001, 12),
        (901, 30.0, 12),
        (250, 25.0, 64),
        (14315, 24.0, 12),
        (100, 1.0, 12),
        (37, 2.5, 3),
        (30, 30.0, 12),
    ],
)
def test_sampling_rule_matches_smolvlm2(total, fps, num_frames):
    assert sample_frame_indices(total, fps, num_frames=num_frames) == official_indices(total, fps, num_frames)


def test_sampling_rule_fixture_and_edges():
    assert sample_frame_indices(64, 4.0, num_frames=12) == [4, 9, 14, 19, 24, 29, 34, 39, 44, 49, 54, 60]
    assert sample_frame_indices(1, 24.0, num_frames=12) == [0]
    assert sample_frame_indices(5, 1.0, num_frames=12, skip_secs=0) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"total_num_frames"):
        sample_frame_indices(0, 24.0, num_frames=12)


# ---- the authors' fixture ---------------------------------------------------------------------


@pytest.mark.skipif(not FIXTURE_A.is_dir(), reason="shared/frames2lora/fixture-A is not beside the repo")
def test_fixture_a_frames_and_metadata_exact():
    from safetensors.torch import load_file

    expected = load_file(FIXTURE_A / "expected.safetensors")
    meta_json = json.loads((FIXTURE_A / "meta.json").read_text())["video"]
    frames, meta = load_video(FIXTURE_A / "tiny-video.mp4", num_frames=12)
    assert (
        meta.frame_indices == expected["video.frame_indices"].tolist() == meta_json["sampled_frame_indices"]
    )
    assert np.array_equal(frames, expected["video.frames_uint8"].numpy())
    assert meta.sha256 == meta_json["sha256"]
    assert (meta.codec, meta.total_num_frames, meta.fps, meta.duration) == ("mpeg4", 64, 4.0, 16.0)
    assert (meta.width, meta.height) == (40, 30)
    json.dumps(meta.to_dict())  # serializable provenance


# ---- real clips -------------------------------------------------------------------------------

REAL = {  # name: (frames, fps, width, height); b.avi's header claims 151 frames
    "bikes.mp4": (250, 25.0, 640, 272),
    "carphone_distorted.mp4": (120, 30000 / 1001, 176, 144),
    "bigbuckbunny.mp4": (132, 25.0, 1280, 720),
    "b.avi": (150, 30.0, 480, 270),
    "world.mp4": (901, 30.0, 480, 270),
}


@pytest.mark.parametrize("name", list(REAL))
def test_real_clip_decodes_the_sampled_frames(real_clip, name):
    path = real_clip(name)
    frames, meta = load_video(path, num_frames=12)
    total, fps, width, height = REAL[name]
    count, reference = reference_frames(path, meta.frame_indices)
    assert meta.total_num_frames == count == total  # the demux count is the decodable count
    assert meta.fps == pytest.approx(fps) and (meta.width, meta.height) == (width, height)
    assert meta.duration == pytest.approx(total / fps)
    assert meta.frame_indices == official_indices(total, meta.fps, 12)
    assert frames.shape == (len(meta.frame_indices), height, width, 3) and frames.dtype == np.uint8
    for frame, index in zip(frames, meta.frame_indices):
        assert np.array_equal(frame, reference[index])


def test_lying_header_is_not_trusted(real_clip):
    import av

    with av.open(str(real_clip("b.avi"))) as container:
        assert container.streams.video[0].frames == 151  # AVI index entry for a dropped frame
    assert probe_video(real_clip("b.avi")).total_num_frames == 150 == reference_frames(real_clip("b.avi"))[0]


def test_chunks_are_streamed(real_clip, monkeypatch):
    from transformers_v2l import video_io

    converted = []
    original = video_io._Converter.__call__
    monkeypatch.setattr(
        video_io._Converter, "__call__", lambda self, frame: converted.append(1) or original(self, frame)
    )
    chunks = iter_video_chunks(real_clip("world.mp4"), chunk_seconds=10)
    frames, _ = next(chunks)
    assert len(converted) == len(frames) == 10  # nothing beyond the first chunk was converted yet
    chunks.close()


def test_real_clip_with_audio_and_codec_names(real_clip):
    assert probe_video(real_clip("bigbuckbunny.mp4")).codec == "h264"
    assert probe_video(real_clip("b.avi")).codec == "mpeg4"
    with pytest.raises(EmptyVideoError, match=r"cate_blanch_2.mp3.*no video stream"):
        load_video(real_clip("cate_blanch_2.mp3"))


def test_animated_gif(real_clip):
    frames, meta = load_video(real_clip("rectangles.gif"), num_frames=12, target_fps=10)
    assert meta.total_num_frames == 3 and frames.shape == (3, 300, 400, 3)


def test_sources_agree(real_clip):
    path = real_clip("carphone_distorted.mp4")
    frames, meta = load_video(path)
    data = path.read_bytes()

    class Unseekable(io.RawIOBase):
        def __init__(self):
            self.inner = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buffer):
            chunk = self.inner.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    for source in (str(path), data, io.BytesIO(data), path.open("rb"), Unseekable()):
        other_frames, other = load_video(source)
        assert np.array_equal(other_frames, frames) and other.frame_indices == meta.frame_indices
        assert other.sha256 == meta.sha256
    assert load_video(data)[1].source == "<bytes>"


def test_span(real_clip):
    path = real_clip("bikes.mp4")
    frames, meta = load_video(path, start=2.0, end=6.0)
    assert (meta.start_frame, meta.total_num_frames, meta.duration) == (50, 100, 4.0)
    assert meta.frame_indices == official_indices(100, 25.0, 12)
    assert meta.start_time == 2.0 and meta.timestamps[-1] < 4.0
    _, reference = reference_frames(path, [50 + index for index in meta.frame_indices])
    for frame, index in zip(frames, meta.frame_indices):
        assert np.array_equal(frame, reference[50 + index])
    with pytest.raises(ValueError, match=r"holds no frame"):
        load_video(path, start=20.0)


def test_chunks_decode_once_and_match(real_clip):
    path = real_clip("world.mp4")
    chunks = list(iter_video_chunks(path, chunk_seconds=10))
    _, reference = reference_frames(path, [m.start_frame + i for _, m in chunks for i in m.frame_indices])
    assert [m.start_frame for _, m in chunks] == [0, 300, 600, 900]
    assert [m.total_num_frames for _, m in chunks] == [300, 300, 300, 1]
    for frames, meta in chunks:
        assert meta.frame_indices == official_indices(meta.total_num_frames, 30.0, 12)
        for frame, index in zip(frames, meta.frame_indices):
            assert np.array_equal(frame, reference[meta.start_frame + index])
    equal = list(iter_video_chunks(path, num_chunks=3, frames_per_chunk=4, skip_secs=0))
    assert [(m.start_frame, m.total_num_frames, len(f)) for f, m in equal] == [
        (0, 300, 4),
        (300, 301, 4),
        (601, 300, 4),
    ]
    with pytest.raises(ValueError, match=r"exactly one"):
        iter_video_chunks(path)  # checked eagerly, before any decoding


# ---- synthetic hazards ------------------------------------------------------------------------


def test_one_frame_video(synthetic_videos):
    frames, meta = load_video(synthetic_videos["one_frame"])
    assert frames.shape == (1, 48, 64, 3) and meta.frame_indices == [0] and meta.total_num_frames == 1


def test_audio_stream_first_picks_video(synthetic_videos):
    frames, meta = load_video(synthetic_videos["audio_first"], num_frames=20, target_fps=10)
    assert meta.total_num_frames == 20 and [frame_index_of(f) for f in frames] == list(range(20))


def test_missing_timestamps_counted_by_decode_order(synthetic_videos):
    frames, meta = load_video(synthetic_videos["no_timestamps"], num_frames=20, target_fps=10)
    assert meta.total_num_frames == 20 and meta.fps == 10.0  # the codec's rate; the container has none
    assert [frame_index_of(f) for f in frames] == list(range(20))


def test_variable_frame_rate(synthetic_videos):
    frames, meta = load_video(synthetic_videos["vfr"], num_frames=12)
    assert meta.total_num_frames == 20
    assert meta.fps == pytest.approx(19 / 3.2)  # measured from the timestamps, not the demuxer's guess (24)
    assert [frame_index_of(f) for f in frames] == meta.frame_indices


def test_corrupt_middle_frame_is_replaced_by_the_next(synthetic_videos):
    path = synthetic_videos["corrupt_middle"]
    with pytest.warns(UserWarning, match=r"corrupt_middle.avi.*undecodable frame 10"):
        frames, meta = load_video(path, num_frames=20, target_fps=10)
    assert meta.frame_indices == list(range(20))
    assert [frame_index_of(f) for f in frames] == [*range(10), 11, *range(11, 20)]


def test_truncated_file_with_index_first_decodes_what_is_there(synthetic_videos):
    path = synthetic_videos["truncated_faststart"]
    with pytest.warns(UserWarning, match=r"truncated_faststart.mp4.*lists 40 frames.*truncated"):
        frames, meta = load_video(path)
    assert 0 < meta.total_num_frames < 40 and len(frames) == len(meta.frame_indices)


@pytest.mark.parametrize(
    "name, error, message",
    [
        ("audio_only", EmptyVideoError, r"audio_only.wav.*no video stream.*audio/pcm_s16le"),
        ("not_a_video", VideoDecodeError, r"notes.mp4.*not a video file"),
        ("empty", VideoDecodeError, r"empty.mp4.*empty"),
        ("truncated", VideoDecodeError, r"truncated.mp4.*MP4/MOV.*truncated or damaged"),
    ],
)
def test_bad_files_raise_named_errors(synthetic_videos, name, error, message):
    with pytest.raises(error, match=message) as raised:
        load_video(synthetic_videos[name])
    if error is VideoDecodeError:
        assert not isinstance(raised.value, EmptyVideoError)


@pytest.mark.parametrize(
    "name, advice",
    [
        ("not_a_video", r"notes.mp4.*first bytes are text.*Pass a video container such as MP4"),
        ("empty", r"empty.mp4.*0 bytes.*Download or export it again"),
        ("truncated", r"truncated.mp4.*truncated or damaged\. Download or export it again"),
    ],
)
def test_bad_file_errors_say_what_to_do(synthetic_videos, name, advice):
    with pytest.raises(VideoDecodeError, match=advice):
        load_video(synthetic_videos[name])


def test_missing_file_error_shows_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    looked = re.escape(str(tmp_path / "missing.mp4"))
    with pytest.raises(VideoDecodeError, match=rf"'missing.mp4'.*does not exist \(looked for {looked}\)"):
        load_video("missing.mp4")
    with pytest.raises(VideoDecodeError, match=r"is a directory.*Pass the video files inside it"):
        load_video(".")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(VideoDecodeError, match=r"nope.mp4.*does not exist"):
        load_video(tmp_path / "nope.mp4")
    with pytest.raises(VideoDecodeError, match=r"is a directory"):
        load_video(tmp_path)


def test_no_decodable_frame_is_empty(tmp_path):
    from fixtures.videos import corrupt_packet

    path = write_video(tmp_path / "dead.avi", 2, codec="mjpeg", pix_fmt="yuvj420p")
    corrupt_packet(corrupt_packet(path, 0), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(EmptyVideoError, match=r"dead.avi.*no frame could be decoded"):
            load_video(path)


def test_huge_resolution_is_capped(huge_video, caplog):
    frames, meta = load_video(huge_video)
    assert (meta.width, meta.height) == (6144, 3072)
    height, width = frames.shape[1:3]
    assert height * width <= 4096 * 4096 and abs(width / height - 2.0) < 0.01
    assert "exceed max_pixels" in caplog.text
    small, _ = load_video(huge_video, max_pixels=64 * 32)
    assert small.shape == (1, 32, 64, 3)


# ---- arrays and images ------------------------------------------------------------------------


def test_arrays_tensors_and_pil_images():
    from PIL import Image

    array = np.stack([np.full((8, 10, 3), 10 * i, np.uint8) for i in range(5)])
    frames, meta = load_video(array)
    assert np.array_equal(frames, array) and meta.fps == 1.0 and meta.frame_indices == [0, 1, 2, 3, 4]
    assert meta.source == "<array>" and meta.timestamps == [0.0, 1.0, 2.0, 3.0, 4.0]
    tensor_frames, tensor_meta = load_video(torch.from_numpy(array))
    assert np.array_equal(tensor_frames, array) and tensor_meta.sha256 == meta.sha256
    pil_frames, pil_meta = load_video([Image.fromarray(a) for a in array])
    assert np.array_equal(pil_frames, array) and pil_meta.source == "<PIL images>"
    long = np.zeros((40, 4, 4, 3), np.uint8)
    assert load_video(long, num_frames=12)[1].frame_indices == official_indices(40, 1.0, 12)
    assert load_video(long, video_fps=10.0)[1].duration == 4.0
    with pytest.raises(InvalidArgumentError, match=r"\[T, H, W, C\] or \[T, C, H, W\].*frame\[None\]"):
        load_video(np.zeros((4, 4, 3), np.uint8))


def test_frame_layouts_dtypes_and_lists():
    array = np.stack([np.full((6, 10, 3), 10 * i, np.uint8) for i in range(4)])  # [T, H, W, 3]
    first = np.ascontiguousarray(array.transpose(0, 3, 1, 2))  # [T, 3, H, W], the transformers convention
    for source in (
        first,
        torch.from_numpy(first),
        torch.from_numpy(first).float() / 255,  # floats in [0, 1]
        torch.from_numpy(first).to(torch.bfloat16) / 255,
        list(array),  # [H, W, 3] frames
        [torch.from_numpy(f) for f in first],  # [3, H, W] tensors
        array.astype(np.int64),
    ):
        frames, meta = load_video(source)
        assert np.array_equal(frames, array) and meta.frame_indices == [0, 1, 2, 3], type(source)
    grey = array[..., :1]  # [T, H, W, 1]
    assert np.array_equal(load_video(grey)[0], np.repeat(grey, 3, axis=-1))
    assert np.array_equal(load_video([f[..., 0] for f in grey])[0], np.repeat(grey, 3, axis=-1))  # [H, W]
    odd = [array[0], np.full((12, 20, 3), 90, np.uint8)]  # a list whose second frame is larger
    frames, _ = load_video(odd)
    assert frames.shape == (2, 6, 10, 3) and np.all(frames[1] == 90)
    for bad, message in [
        (np.full((2, 4, 5, 3), 1.5, np.float32), r"values in \[0, 1\]"),
        (np.full((2, 4, 5, 3), 300, np.int32), r"0\.\.255"),
        (np.zeros((2, 5, 6, 7), np.uint8), r"channels"),
        ([], r"at least one frame"),
        ({"frames": 3}, r"Cannot read a video from a dict"),
    ]:
        with pytest.raises(InvalidArgumentError, match=message):
            load_video(bad)


def test_transparency_is_composited_onto_white_like_transformers():
    from PIL import Image
    from transformers.image_transforms import convert_to_rgb
    from transformers.video_utils import convert_to_rgb as convert_video_to_rgb

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (3, 8, 10, 4), dtype=np.uint8)  # [T, H, W, 4], every alpha level mixed
    expected = np.stack([convert_to_rgb(frame, return_numpy=True) for frame in rgba])
    frames, _ = load_video(rgba)
    assert np.array_equal(frames, expected)
    assert np.array_equal(load_video(torch.from_numpy(rgba).permute(0, 3, 1, 2))[0], expected)  # [T, 4, H, W]
    assert np.array_equal(load_video([Image.fromarray(f, "RGBA") for f in rgba])[0], expected)
    # the official video processor blends in float32 and does not round: within half a level
    official = convert_video_to_rgb(torch.from_numpy(rgba).permute(0, 3, 1, 2).contiguous())  # [T, 3, H, W]
    assert (official.permute(0, 2, 3, 1).numpy() - frames).__abs__().max() <= 0.5 + 1e-3
    assert (frames.astype(int) - rgba[..., :3]).__abs__().max() > 100  # alpha was not simply dropped
    grey = Image.fromarray(rgba[0, ..., 0], "L")
    assert np.array_equal(load_video([grey])[0][0], np.repeat(rgba[0, ..., :1], 3, axis=-1))
    palette = Image.fromarray(rgba[0, ..., :3]).convert("P")
    palette.info["transparency"] = int(np.asarray(palette)[0, 0])
    assert np.all(load_video([palette])[0][0, 0, 0] == 255)  # the transparent index turns white


# ---- sampling arguments and sources -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_frames": 0}, r"num_frames must be an integer >= 1, got 0"),
        ({"num_frames": -3}, r"num_frames must be an integer >= 1, got -3"),
        ({"num_frames": 2.5}, r"num_frames must be an integer"),
        ({"num_frames": True}, r"num_frames must be an integer"),
        ({"target_fps": 0}, r"target_fps must be a finite number > 0"),
        ({"target_fps": float("nan")}, r"target_fps must be a finite number > 0"),
        ({"skip_secs": -1}, r"skip_secs must be a finite number >= 0"),
        ({"video_fps": 0}, r"video_fps must be a finite number > 0"),
        ({"max_pixels": 0}, r"max_pixels must be an integer >= 1"),
        ({"start": -2.0}, r"start must be a finite number >= 0"),
    ],
)
def test_invalid_sampling_arguments_are_refused_before_reading(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):  # not "file does not exist": nothing was read
        load_video("no-such-file.mp4", **kwargs)


def test_invalid_chunk_arguments_are_refused_eagerly():
    for kwargs, message in [
        ({}, r"exactly one of chunk_seconds or num_chunks"),
        ({"chunk_seconds": 0}, r"chunk_seconds must be a finite number > 0"),
        ({"num_chunks": 0}, r"num_chunks must be an integer >= 1"),
        ({"num_chunks": 2, "frames_per_chunk": 0}, r"frames_per_chunk must be an integer >= 1"),
    ]:
        with pytest.raises(InvalidArgumentError, match=message):
            iter_video_chunks("no-such-file.mp4", **kwargs)


def test_large_num_frames_is_a_maximum_and_the_metadata_records_what_was_used(real_clip):
    frames, meta = load_video(real_clip("carphone_distorted.mp4"), num_frames=100000)
    assert len(frames) == len(meta.frame_indices) == 4  # SmolVLM2's 1 fps over 4 s
    assert meta.to_dict()["frame_indices"] == meta.frame_indices


def test_urls_are_refused_without_network(tmp_path):
    import socket

    for url in ("https://example.com/a.mp4", "http://127.0.0.1:9/a.mp4", "s3://bucket/a.mp4"):
        with pytest.raises(
            VideoDecodeError, match=r"is a URL.*local files.*Download the file first"
        ) as raised:
            load_video(url)
        assert "does not exist" not in str(raised.value)
        with pytest.raises(VideoDecodeError, match=r"is a URL"):
            check_video_source(url)
    with socket.socket() as server:  # a playlist inside a local file may not reach the network either
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        playlist = tmp_path / "list.m3u8"
        port = server.getsockname()[1]
        playlist.write_text(f"#EXTM3U\n#EXTINF:10,\nhttp://127.0.0.1:{port}/seg.ts\n#EXT-X-ENDLIST\n")
        with pytest.raises(VideoDecodeError):
            load_video(playlist)
        with pytest.raises(TimeoutError):
            server.accept()  # nobody connected


def test_check_video_source(tmp_path, synthetic_videos):
    check_video_source(synthetic_videos["ten_frames"])  # a readable file passes without decoding
    for path, message in [
        (tmp_path / "nope.mp4", r"does not exist"),
        (tmp_path, r"is a directory"),
        (synthetic_videos["empty"], r"empty \(0 bytes\)"),
    ]:
        with pytest.raises(VideoDecodeError, match=message):
            check_video_source(path)


# ---- timestamps over headers --------------------------------------------------------------------

SKIP_SLOTS = np.unique(np.linspace(0, 443, 68).round().astype(int)).tolist()  # 68 frames in 444 slots


@pytest.fixture(scope="module")
def skipping_avi(tmp_path_factory):
    """Cinepak in AVI: the header declares 444 frames at 15 fps; 68 frames exist, their timestamps run to 29.5 s."""
    from fixtures.videos import write_skipping_avi

    return write_skipping_avi(tmp_path_factory.mktemp("skipping") / "skipping.avi", SKIP_SLOTS, fps=15)


def decoded_times(path) -> list[float]:
    import av

    with av.open(str(path)) as container:
        return [float(frame.time) for frame in container.decode(video=0)]


def test_duration_and_sampling_follow_timestamps_not_the_header(skipping_avi):
    import av

    with av.open(str(skipping_avi)) as container:
        stream = container.streams.video[0]
        assert (stream.frames, float(stream.average_rate)) == (444, 15.0)  # what the header claims
    times = decoded_times(skipping_avi)
    assert len(times) == 68 and times[-1] == pytest.approx(443 / 15)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames, meta = load_video(skipping_avi)
    assert not [w for w in caught if "truncated" in str(w.message)]  # it skips frames; nothing is missing
    assert meta.total_num_frames == 68 and meta.duration == pytest.approx(444 / 15)  # last frame shown 1/15 s
    assert meta.fps == pytest.approx(68 / (444 / 15))
    assert len(meta.frame_indices) == 12  # SmolVLM2's rule over 29.6 s: 1 fps, at most 12 (was 5 over 4.5 s)
    assert meta.timestamps == pytest.approx([times[i] for i in meta.frame_indices])  # presentation times
    instants = np.linspace(1.0, meta.duration - 1.0, 12)  # skip_secs=1 at each end
    assert meta.frame_indices == [int(np.searchsorted(times, t + 1e-9, side="right")) - 1 for t in instants]
    _, reference = reference_frames(skipping_avi, meta.frame_indices)
    for frame, index in zip(frames, meta.frame_indices):
        assert np.array_equal(frame, reference[index])
    assert json.loads(json.dumps(meta.to_dict()))["timestamps"][-1] == pytest.approx(
        times[meta.frame_indices[-1]]
    )
    assert probe_video(skipping_avi).duration == pytest.approx(444 / 15)


def test_prompt_carries_the_real_timestamps(skipping_avi, tiny_vlm_path):
    from transformers_v2l.processing_video2lora import Video2LoraProcessor

    processor = Video2LoraProcessor.from_pretrained(tiny_vlm_path)
    inputs = processor.internalization_inputs(str(skipping_avi))
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    stamps = re.findall(r"Frame from (\d\d:\d\d)", text)
    assert "0:00:29 [H:MM:SS]" in text and stamps[-1] == "00:28" and len(stamps) == 12


def test_chunks_follow_timestamps(skipping_avi):
    chunks = list(iter_video_chunks(skipping_avi, chunk_seconds=8, frames_per_chunk=8, skip_secs=0))
    assert len(chunks) == 4  # 29.6 s in 8 s chunks (the header's 4.5 s made one)
    times = decoded_times(skipping_avi)
    for k, (frames, meta) in enumerate(chunks):
        assert 8 * k <= meta.start_time < 8 * k + 1 and meta.start_time == times[meta.start_frame]
        assert len(frames) == len(meta.frame_indices) and meta.timestamps[-1] < meta.duration
        absolute = [meta.start_time + t for t in meta.timestamps]
        assert absolute == pytest.approx([times[meta.start_frame + i] for i in meta.frame_indices])
    assert sum(m.duration for _, m in chunks) == pytest.approx(444 / 15)
    frames, meta = load_video(skipping_avi, start=8.0, end=16.0)
    assert (
        meta.start_frame == chunks[1][1].start_frame
        and meta.total_num_frames == chunks[1][1].total_num_frames
    )


def test_timeline_rule():
    regular = FrameTimeline.from_timestamps(np.arange(150) / 30, 30.0, 1 / 30)
    assert regular.times is None and regular.end == 5.0  # constant rate: SmolVLM2's index rule
    dropped = FrameTimeline.from_timestamps(np.array([0, *range(2, 151)]) / 30, 30.0, 1 / 30)  # like b.avi
    assert dropped.times is None and dropped.count == 150
    drift = np.concatenate([np.arange(10) * 0.1, 1.0 + np.arange(10)])  # 10 fps, then 1 fps
    timeline = FrameTimeline.from_timestamps(drift, 19 / 10.0, None)
    assert timeline.times is not None and timeline.end == pytest.approx(
        10.0 + 0.1
    )  # last shown: shortest gap
    assert timeline.frames_between(1.0, 5.0) == (10, 14)
    assert timeline.chunk_bounds(None, 2) == [0, 15, 20]  # halves of 10.1 s
    broken = FrameTimeline.from_timestamps(np.array([0.0, 0.0, 5.0]), 10.0, None)  # duplicate stamps
    assert broken.times is None


# ---- frame size changes -------------------------------------------------------------------------


def test_frame_size_change_mid_stream_is_decoded(tmp_path):
    from fixtures.videos import write_size_change_video

    path = write_size_change_video(tmp_path / "switch.h264", [(8, (48, 64)), (8, (72, 96)), (4, (48, 64))])
    with pytest.warns(UserWarning, match=r"switch.h264.*size changes mid-stream \(64x48 to 96x72\)"):
        frames, meta = load_video(path, num_frames=20, target_fps=100)
    assert frames.shape == (20, 48, 64, 3) and (meta.width, meta.height) == (64, 48)
    assert [frame_index_of(f) for f in frames] == list(range(20))  # every frame, in order, resized
