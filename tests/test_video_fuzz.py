"""Fuzzing the whole decode path with mutated real clips: every failure is a typed error, nothing hangs.

Each mutation (truncation, bit flips, a zeroed block, noise in the container header, a splice of two
files) of one of our real clips goes through `Video2LoraProcessor.internalization_inputs`: probe,
decode, prompt and pixel preprocessing. The outcome is one of

* `decoded`: pixels came out;
* `typed`: a `Video2LoraError` (`VideoDecodeError`, `EmptyVideoError`) with a message;
* `untyped`: any other exception (a bug);
* `hang`: no answer within `TIMEOUT` seconds (the worker process is killed and restarted);
* `crash`: the worker process died (a segfault or an abort in FFmpeg).

Mutations run in worker subprocesses so that a hang or a crash is observed rather than suffered. The
mutations are seeded: a failure names its index, and `python tests/test_video_fuzz.py --only N`
replays it.

Run alone (prints the tally): `python tests/test_video_fuzz.py --count 1000`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

KINDS = ("truncate", "bit_flips", "zeroed_block", "header_noise", "splice")
CLIPS = [
    "bikes.mp4",
    "carphone_distorted.mp4",
    "bigbuckbunny.mp4",
    "world.mp4",
    "b.avi",
    "b.mp4",
    "a.mp4",
    "rectangles.gif",
]
REAL_FILES = [*CLIPS, "cate_blanch_2.mp3"]
# The same footage remuxed (not re-encoded) into MPEG-TS, where concatenated streams keep decoding, so a
# splice can change the frame size mid-stream.
REMUXED = {
    "bikes.ts": "bikes.mp4",
    "carphone_distorted.ts": "carphone_distorted.mp4",
    "world.ts": "world.mp4",
}
CLIPS += list(REMUXED)
SPLICE_PARTNERS = [*REAL_FILES, *REMUXED]
COUNT = 1000
SEED = 17
TIMEOUT = 30.0  # seconds per file; a clean decode of the largest clip takes about 1 s


# ---- mutations ----------------------------------------------------------------------------------


def _mp4_boxes(data: bytes) -> dict[bytes, tuple[int, int]]:
    """Top-level MP4 boxes `{type: (start, end)}` (the first of each type); empty for other formats."""
    boxes, offset = {}, 0
    while offset + 8 <= len(data):
        size, kind = int.from_bytes(data[offset : offset + 4], "big"), data[offset + 4 : offset + 8]
        if size == 1 and offset + 16 <= len(data):
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        if size < 8 or not kind.isalnum():
            break
        boxes.setdefault(kind, (offset, min(len(data), offset + size)))
        offset += size
    return boxes


def _header_region(data: bytes) -> tuple[int, int]:
    """Where a container keeps its description: the MP4 `moov` box, else the first 4 KiB."""
    moov = _mp4_boxes(data).get(b"moov")
    return moov if moov else (0, min(len(data), 4096))


def mutate(index: int, clips: dict[str, bytes], seed: int = SEED) -> tuple[str, str, bytes]:
    """Mutation `index`: `(kind, description, bytes)`, the same for the same `index` and `seed`."""
    rng = np.random.default_rng([seed, index])
    kind = KINDS[index % len(KINDS)]
    name = CLIPS[int(rng.integers(len(CLIPS)))]
    data = bytearray(clips[name])
    size = len(data)
    if kind == "truncate":
        cut = max(1, int(size * rng.random() ** 2))  # biased towards the headers
        return kind, f"{name}[:{cut}]", bytes(data[:cut])
    if kind == "bit_flips":
        flips = int(rng.integers(1, 65))
        for position in rng.integers(0, size, flips):
            data[position] ^= 1 << int(rng.integers(8))
        return kind, f"{name} with {flips} flipped bits", bytes(data)
    if kind == "zeroed_block":
        length = int(2 ** rng.uniform(4, 16))
        start = int(rng.integers(0, size))
        data[start : start + length] = bytes(len(data[start : start + length]))
        return kind, f"{name} zeroed [{start}:{start + length}]", bytes(data)
    if kind == "header_noise":
        first, last = _header_region(bytes(data))
        writes = int(rng.integers(1, 33))
        for _ in range(writes):
            start, length = int(rng.integers(first, last)), int(rng.integers(1, 9))
            noise = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
            data[start : start + length] = noise[: len(data[start : start + length])]
        return kind, f"{name} with {writes} noise runs in [{first}:{last}]", bytes(data)
    partner = SPLICE_PARTNERS[int(rng.integers(len(SPLICE_PARTNERS)))]
    other = clips[partner]
    cut_a, cut_b = int(rng.integers(1, size)), int(rng.integers(0, len(other)))
    if rng.random() < 0.25:
        cut_b = 0  # a whole second file appended
    return kind, f"{name}[:{cut_a}] + {partner}[{cut_b}:]", bytes(data[:cut_a]) + other[cut_b:]


def fuzz_corpus(real_paths: dict[str, Path], folder: Path) -> dict[str, Path]:
    """The real files plus their MPEG-TS remuxes (written into `folder`)."""
    from fixtures.videos import remux

    corpus = dict(real_paths)
    for name, original in REMUXED.items():
        corpus[name] = remux(real_paths[original], Path(folder) / name, "mpegts")
    return corpus


# ---- worker process -----------------------------------------------------------------------------


def _worker(processor_path: str) -> None:
    """Read file paths on stdin, answer one JSON line per path on the original stdout."""
    import logging
    import traceback
    import warnings

    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # stray prints cannot corrupt the protocol
    warnings.simplefilter("ignore")  # damaged files warn; the outcome is what we count
    logging.disable(logging.WARNING)
    import torch

    torch.set_num_threads(1)
    from transformers_v2l.errors import Video2LoraError
    from transformers_v2l.processing_video2lora import Video2LoraProcessor

    processor = Video2LoraProcessor.from_pretrained(processor_path)
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        path = line.strip()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                inputs = processor.internalization_inputs(path)
            resized = any("size changes mid-stream" in str(w.message) for w in caught)
            answer = {"outcome": "decoded", "detail": list(inputs["pixel_values"].shape), "resized": resized}
        except Video2LoraError as error:
            answer = {"outcome": "typed", "detail": f"{type(error).__name__}: {error}"}
        except Exception as error:
            lines = traceback.format_exception(error)
            answer = {
                "outcome": "untyped",
                "detail": f"{type(error).__name__}: {error}",
                "tb": "".join(lines),
            }
        out.write(json.dumps(answer) + "\n")
        out.flush()


class _Worker:
    """A worker subprocess that decodes one file at a time, with a deadline; restarted after a hang or a crash."""

    def __init__(self, processor_path: str):
        self.processor_path = processor_path
        self.process = None
        self.job: tuple | None = None  # (index, kind, description, path, deadline)

    def start(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, os.path.abspath(__file__), "--worker", self.processor_path]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        readable, _, _ = select.select([self.process.stdout], [], [], 120.0)
        if not readable or not self.process.stdout.readline():
            raise RuntimeError("the fuzz worker did not start within 120 s")

    def send(self, job: tuple, timeout: float) -> None:
        if self.process is None:
            self.start()
        self.job = (*job, time.monotonic() + timeout)
        try:
            self.process.stdin.write(job[-1] + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # the read below sees the end of the stream and reports a crash

    def answer(self) -> dict:
        """The answer to the current job (call when stdout is readable)."""
        line = self.process.stdout.readline()
        if line:
            return json.loads(line)
        code = self.process.wait()
        self.process = None
        return {"outcome": "crash", "detail": f"the worker exited with code {code}"}

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def run_fuzz(
    clip_paths: dict[str, Path],
    processor_path: str,
    indices: range | list[int],
    workers: int = 2,
    timeout: float = TIMEOUT,
) -> tuple[collections.Counter, list[dict]]:
    """Run the mutations `indices`; returns `(Counter of (kind, outcome)), [records of the failures])`."""
    clips = {name: Path(path).read_bytes() for name, path in clip_paths.items()}
    pool = [_Worker(processor_path) for _ in range(max(1, workers))]
    tally, failures = collections.Counter(), []
    pending = list(indices)[::-1]

    def finish(worker: _Worker, answer: dict) -> None:
        index, kind, description, path, _ = worker.job
        worker.job = None
        os.unlink(path)
        tally[kind, answer["outcome"]] += 1
        tally["resized", "size changes mid-stream"] += bool(answer.get("resized"))
        if answer["outcome"] not in ("decoded", "typed"):
            failures.append({"index": index, "kind": kind, "mutation": description, **answer})

    with tempfile.TemporaryDirectory(prefix="v2l-fuzz-") as folder:
        try:
            while pending or any(w.job for w in pool):
                for worker in pool:
                    if worker.job is None and pending:
                        index = pending.pop()
                        kind, description, data = mutate(index, clips)
                        path = os.path.join(
                            folder, f"m{index}{Path(description.split()[0].split('[')[0]).suffix}"
                        )
                        Path(path).write_bytes(data)
                        worker.send((index, kind, description, path), timeout)
                busy = [w for w in pool if w.job]
                wait = max(0.0, min(w.job[-1] for w in busy) - time.monotonic())
                readable, _, _ = select.select([w.process.stdout for w in busy], [], [], wait)
                for worker in busy:
                    if worker.process.stdout in readable:
                        finish(worker, worker.answer())
                    elif time.monotonic() > worker.job[-1]:
                        worker.stop()
                        finish(worker, {"outcome": "hang", "detail": f"no answer within {timeout:.0f} s"})
        finally:
            for worker in pool:
                worker.stop()
    return tally, failures


def format_tally(tally: collections.Counter) -> str:
    """A table: one row per mutation kind, one column per outcome, and the totals."""
    outcomes = ["decoded", "typed", "untyped", "hang", "crash"]
    rows = [f"{'kind':<14}" + "".join(f"{o:>9}" for o in outcomes)]
    for kind in [*KINDS, "total"]:
        counts = [
            sum(v for (k, o), v in tally.items() if o == outcome and kind in (k, "total") and k in KINDS)
            for outcome in outcomes
        ]
        rows.append(f"{kind:<14}" + "".join(f"{c:>9}" for c in counts))
    resized = tally["resized", "size changes mid-stream"]
    return "\n".join(rows) + f"\n(decoded with frames resized after a mid-stream size change: {resized})"


# ---- the test -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_mutated_real_clips_fail_typed_and_never_hang(real_clip, tiny_vlm_path, tmp_path):
    clip_paths = fuzz_corpus({name: real_clip(name) for name in REAL_FILES}, tmp_path)
    start = time.perf_counter()
    tally, failures = run_fuzz(clip_paths, str(tiny_vlm_path), range(COUNT))
    seconds = time.perf_counter() - start
    print(f"\n{COUNT} mutations (seed {SEED}) in {seconds:.0f} s:\n{format_tally(tally)}")
    for failure in failures[:20]:
        print(json.dumps(failure)[:2000])
    assert sum(v for (k, _), v in tally.items() if k in KINDS) == COUNT
    assert (
        sum(v for (k, o), v in tally.items() if o == "decoded" and k in KINDS) > COUNT // 2
    )  # mostly decodable
    assert not failures, f"{len(failures)} untyped errors, hangs or crashes; first: {failures[0]}"


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", metavar="PROCESSOR_PATH", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=COUNT)
    parser.add_argument("--only", type=int, nargs="*", help="replay these mutation indices")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=TIMEOUT)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from fixtures.videos import REAL_CLIP_PACKAGES, _fetch_package
    from transformers_v2l.families.smolvlm import SmolVLMFamily

    clip_paths: dict[str, Path] = {}
    for spec, members in REAL_CLIP_PACKAGES.items():
        found, error = _fetch_package(spec, members)
        if error:
            raise SystemExit(error)
        clip_paths.update(found)
    with tempfile.TemporaryDirectory() as folder:
        clip_paths = fuzz_corpus(clip_paths, Path(folder))
        processor_path = str(
            SmolVLMFamily.save_tiny_model(*SmolVLMFamily.build_tiny_model(seed=0), Path(folder) / "tiny")
        )
        indices = args.only if args.only else range(args.count)
        start = time.perf_counter()
        tally, failures = run_fuzz(clip_paths, processor_path, indices, args.workers, args.timeout)
        print(f"{len(indices)} mutations (seed {SEED}) in {time.perf_counter() - start:.0f} s:")
        print(format_tally(tally))
        for failure in failures:
            print(json.dumps({k: v for k, v in failure.items() if k != "tb"}))
            if args.only and "tb" in failure:
                print(failure["tb"])


if __name__ == "__main__":
    _main()
