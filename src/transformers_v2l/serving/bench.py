"""`v2l bench serve`: the server over HTTP against in-process answering, at a real checkpoint's shape (random weights).

Two `v2l serve --random-weights PRESET` processes run beside this one (same seed, so the same weights):
server A serves uploaded videos with per-row adapters; server B has one adapter merged into its
weights (`--merge-adapter`) and answers the base model with it. Clients talk HTTP/1.1 with keep-alive
and read the server-sent events as they arrive.

| measurement | how |
|---|---|
| `ttft` | one client, `max_tokens=1`, streamed: first content chunk over HTTP (server A) vs `hn.answer(adapter, q, max_new_tokens=1)` in this process, on a new thread as the server's engine runs (and, for reference, on the main thread), interleaved |
| `throughput` | 16 clients at once, each on its own video (A, one adapter per row) vs the same 16 requests on B's merged adapter vs the same 16 requests one at a time on A; `new_tokens` each (`ignore_eos`) |
| `during_internalization` | one client asking again and again (`max_tokens=1`) while A internalizes a `internalize_frames`-frame video: its TTFT before and during |

Every timing is the median of `repeats` rounds. Targets (issue 16): HTTP TTFT <= 1.10x in-process;
16 videos >= 0.8x one merged adapter and >= 2.5x one at a time.
"""

from __future__ import annotations

import http.client
import json
import shutil
import statistics
import tempfile
import threading
import time
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SSEClient", "run_serve_bench"]


class SSEClient:
    """A keep-alive HTTP/1.1 client for `v2l serve` that streams chat completions and times them.

    Args:
        url: the server's base URL.

    Example:
        ```python
        client = SSEClient("http://127.0.0.1:8000")
        ttft, total, tokens = client.chat("vid-...", "What happens?", max_tokens=16)
        ```
    """

    def __init__(self, url: str):
        parsed = urllib.parse.urlparse(url)
        self.connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=900)

    def chat(
        self, model: str, question: str, *, max_tokens: int, ignore_eos: bool = True
    ) -> tuple[float, float, int]:
        """One streamed, greedy chat completion.

        Args:
            model: a video id or the base model's name.
            question: the user message.
            max_tokens: tokens to generate.
            ignore_eos: generate exactly `max_tokens`.

        Returns:
            `(seconds to the first content chunk, seconds to the end, completion tokens)`.

        Raises:
            RuntimeError: the server answered with an error.

        Example:
            ```python
            ttft, total, tokens = client.chat(video, "What happens?", max_tokens=1)
            ```
        """
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": question}], "stream": True,
                           "stream_options": {"include_usage": True}, "temperature": 0, "max_tokens": max_tokens,
                           "ignore_eos": ignore_eos})  # fmt: skip
        start = time.perf_counter()
        try:
            self.connection.request(
                "POST", "/v1/chat/completions", body, {"Content-Type": "application/json"}
            )
            response = self.connection.getresponse()
        except (
            BrokenPipeError,
            ConnectionResetError,
            http.client.RemoteDisconnected,
        ):  # an idle keep-alive closed
            self.connection.close()
            start = time.perf_counter()
            self.connection.request(
                "POST", "/v1/chat/completions", body, {"Content-Type": "application/json"}
            )
            response = self.connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {response.read()[:300]!r}")
        first, tokens = None, 0
        while line := response.readline():
            if not line.startswith(b"data: "):
                continue
            if line.strip() == b"data: [DONE]":
                break
            chunk = json.loads(line[6:])
            if first is None and any(c["delta"].get("content") for c in chunk.get("choices", [])):
                first = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
        response.read()
        total = time.perf_counter() - start
        return (first if first is not None else total), total, tokens

    def close(self) -> None:
        """Close the connection.

        Example:
            ```python
            client.close()
            ```
        """
        self.connection.close()


def _write_noise_video(path: Path, frames: int, seed: int, size: int = 256) -> Path:
    from ..toy_world import write_video

    rng = np.random.default_rng(seed)
    return write_video(rng.integers(0, 256, size=(frames, size, size, 3), dtype=np.uint8), path, fps=1)


def _upload(url: str, path: Path) -> str:
    import urllib.request

    boundary = "v2l-bench"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n\r\n'.encode()
            + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode())  # fmt: skip
    request = urllib.request.Request(f"{url}/v1/videos", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())["id"]


def _get(url: str, path: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"{url}{path}", timeout=600) as response:
        return response.read()


def _wait_ready(url: str, video: str, timeout: float = 1800) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = json.loads(_get(url, f"/v1/videos/{video}"))
        if record["status"] == "ready":
            return record
        if record["status"] == "failed":
            raise RuntimeError(f"{video} failed: {record['error']}")
        time.sleep(0.2)
    raise TimeoutError(f"{video} was not ready after {timeout:g} s")


def _download_adapter(url: str, video: str, folder: Path) -> Path:
    archive = folder / f"{video}.zip"
    archive.write_bytes(_get(url, f"/v1/videos/{video}/adapter"))
    with zipfile.ZipFile(archive) as handle:
        handle.extractall(folder / video)
    return folder / video


def _engine_ttft(url: str) -> tuple[float, int]:
    """`(sum, count)` of the server's time-to-first-token histogram."""
    values = {}
    for line in _get(url, "/metrics").decode().splitlines():
        if line.startswith("v2l_time_to_first_token_seconds_sum") or line.startswith(
            "v2l_time_to_first_token_seconds_count"
        ):
            name, value = line.split()
            values[name] = float(value)
    return values["v2l_time_to_first_token_seconds_sum"], int(values["v2l_time_to_first_token_seconds_count"])


#: Pause before each timed TTFT measurement: after a forward pass, OpenMP worker threads spin-wait for a while
#: before they sleep, and on a 2-core machine the next measurement (in the other process) would share the cores
#: with them, so whichever condition runs second in a round was slowed by the one before it.
SETTLE_SECONDS = 0.5


def _settled(fn):
    """`fn()` after `SETTLE_SECONDS` of idleness (both processes' worker threads asleep)."""
    time.sleep(SETTLE_SECONDS)
    return fn()


def _in_new_thread(fn) -> float:
    """Run `fn` on a new thread and return its result (torch's intra-op threads behave as in the server's engine)."""
    result: list[float] = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join()
    return result[0]


def _concurrent(url: str, models: list[str], question: str, new_tokens: int) -> dict[str, Any]:
    """`len(models)` clients at once (each its own connection); wall time from the common start to the last end."""
    clients = [SSEClient(url) for _ in models]
    results: list[tuple[float, float, int] | None] = [None] * len(models)
    barrier = threading.Barrier(len(models) + 1)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = clients[i].chat(models[i], question, max_tokens=new_tokens)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(models))]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    for client in clients:
        client.close()
    tokens = sum(r[2] for r in results)
    return {"wall": wall, "tokens": tokens, "tokens_per_s": tokens / wall,
            "ttft_median": statistics.median(r[0] for r in results)}  # fmt: skip


def _sequential(url: str, models: list[str], question: str, new_tokens: int) -> dict[str, Any]:
    client = SSEClient(url)
    start = time.perf_counter()
    tokens = sum(client.chat(model, question, max_tokens=new_tokens)[2] for model in models)
    wall = time.perf_counter() - start
    client.close()
    return {"wall": wall, "tokens": tokens, "tokens_per_s": tokens / wall}


def _during_internalization(
    url: str, video: str, question: str, path: Path, idle_rounds: int
) -> dict[str, Any]:
    client = SSEClient(url)
    idle = [client.chat(video, question, max_tokens=1)[0] for _ in range(idle_rounds)]
    start = time.perf_counter()
    new_video = _upload(url, path)
    accepted = time.perf_counter() - start
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def watch() -> None:
        _wait_ready(url, new_video)
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    while not done.is_set():
        sent = time.perf_counter() - start
        samples.append((sent, client.chat(video, question, max_tokens=1)[0]))
    ready = time.perf_counter() - start
    client.close()
    during = [ttft for sent, ttft in samples if accepted <= sent <= ready]
    return {"idle_ttft": idle, "samples": samples, "accepted_at": accepted, "ready_at": ready,
            "idle_median": statistics.median(idle), "during_median": statistics.median(during) if during else None,
            "during_max": max(during) if during else None, "during_count": len(during)}  # fmt: skip


def plot_serve(results: dict[str, Any], path: str | Path) -> Path:
    """Three panels: time to first token, aggregate tokens per second, TTFT while a video internalizes.

    Args:
        results: what `run_serve_bench` returns.
        path: the `.png` to write.

    Returns:
        The path written.

    Example:
        ```python
        plot_serve(json.loads(Path("benchmarks/results/serve_256m.json").read_text()), "serve.png")
        ```
    """
    from ..benchmarks.common import new_figure, save_figure

    fig, (left, middle, right) = new_figure(3, width=4.6)
    ttft = results["ttft"]
    names = ["in-process\nhn.answer", "HTTP\n(v2l serve)"]
    values = [ttft["in_process"]["median"] * 1000, ttft["http"]["median"] * 1000]
    left.bar(names, values, color=["#888", "#48c"])
    left.set_ylabel("time to first token (ms, median)")
    left.set_title(f"one client: {ttft['ratio_http_over_in_process']:.2f}x")
    throughput = results["throughput"]
    names = ["16 videos,\nper-row", "1 merged\nadapter", "one at\na time"]
    values = [throughput[k]["tokens_per_s"] for k in ("per_row", "merged", "sequential")]
    middle.bar(names, values, color=["#48c", "#888", "#bbb"])
    middle.set_ylabel("aggregate tokens / s (median)")
    middle.set_title(f"16 clients: {throughput['per_row_over_merged']:.2f}x merged, "
                     f"{throughput['per_row_over_sequential']:.1f}x serial", fontsize=9)  # fmt: skip
    during = results["during_internalization"]
    sent, values = zip(*during["samples"]) if during["samples"] else ((), ())
    right.scatter(sent, [v * 1000 for v in values], s=8, color="#48c")
    right.axvspan(during["accepted_at"], during["ready_at"], color="#fc8", alpha=0.4, label="internalizing")
    right.axhline(during["idle_median"] * 1000, color="#888", ls="--", label="idle median")
    right.set_xlabel("seconds since upload")
    right.set_ylabel("TTFT (ms)")
    right.legend(fontsize=8)
    right.set_title(
        f"while a {results['settings']['internalize_frames']}-frame video internalizes", fontsize=9
    )
    return save_figure(fig, path)


def run_serve_bench(preset: str = "256m", *, repeats: int = 5, warmup: int = 1, new_tokens: int = 32,
                    clients: int = 16, internalize_frames: int = 12, out_dir: str | Path = "benchmarks/results",
                    threads: int | None = None, verbose: bool = True) -> dict[str, Any]:  # fmt: skip
    """Run the serving benchmark; writes `serve_<preset>.json` and `.png`.

    Args:
        preset: a real checkpoint's shape (`transformers_v2l.testing.presets()`).
        repeats: timed rounds per measurement (median reported).
        warmup: untimed rounds.
        new_tokens: tokens per answer in the throughput runs.
        clients: concurrent clients, each on its own video.
        internalize_frames: frames of the video internalized during the last measurement.
        out_dir: result folder.
        threads: torch threads of this process and the servers (default `$V2L_BENCH_THREADS` or 2).
        verbose: print progress.

    Returns:
        The result dictionary written to JSON.

    Example:
        ```python
        run_serve_bench("256m", repeats=3)
        ```
    """
    import os

    from ..benchmarks.common import machine_info, set_threads, summarize, write_json
    from ..benchmarks.models import BENCH_QUESTION, build_setup
    from ..lora import GeneratedLora
    from .process import ServerProcess

    threads = threads or int(os.environ.get("V2L_BENCH_THREADS", "2"))
    set_threads(threads)
    log = print if verbose else (lambda *a, **k: None)
    work = Path(tempfile.mkdtemp(prefix="v2l-bench-serve-"))
    common = [
        "--random-weights",
        preset,
        "--threads",
        str(threads),
        "--max-batch",
        str(clients),
        "--log-level",
        "warning",
    ]
    log(f"[serve {preset}] building the in-process model and starting server A")
    setup = build_setup(preset)
    server = ServerProcess([*common, "--store", str(work / "store-a")], log_path=work / "a.log").start()
    merged = None
    try:
        paths = [_write_noise_video(work / f"noise{i}.mp4", 1, seed=i) for i in range(clients + 1)]
        videos = [_upload(server.url, path) for path in paths]
        for video in videos:
            _wait_ready(server.url, video)
        log(f"[serve {preset}] {len(videos)} videos internalized; starting server B (one merged adapter)")
        adapter_dirs = [_download_adapter(server.url, v, work) for v in videos[:2]]
        merged = ServerProcess([*common, "--store", str(work / "store-b"), "--merge-adapter", str(adapter_dirs[1])],
                               log_path=work / "b.log").start()  # fmt: skip
        base = json.loads(_get(merged.url, "/v1/models"))["data"][0]["id"]
        adapter = GeneratedLora.from_pretrained(adapter_dirs[0])
        hn, client = setup.hypernet, SSEClient(server.url)
        in_process, main_thread, http = [], [], []

        def answer() -> float:
            start = time.perf_counter()
            hn.answer(adapter, BENCH_QUESTION, max_new_tokens=1)
            return time.perf_counter() - start

        engine_before = None
        for round_ in range(warmup + repeats):  # interleaved: the same load conditions for all three
            if round_ == warmup:
                engine_before = _engine_ttft(server.url)
            local = _settled(lambda: _in_new_thread(answer))  # as the server's engine runs: on its own thread
            main = _settled(answer)
            remote = _settled(lambda: client.chat(videos[0], BENCH_QUESTION, max_tokens=1)[0])
            if round_ >= warmup:
                in_process.append(local)
                main_thread.append(main)
                http.append(remote)
        client.close()
        engine_after = _engine_ttft(server.url)
        ttft = {"in_process": summarize(in_process), "in_process_main_thread": summarize(main_thread),
                "http": summarize(http),
                # the server's own submission-to-first-token time (its /metrics histogram), averaged
                "server_engine_mean": (engine_after[0] - engine_before[0]) / max(1, engine_after[1] - engine_before[1])}  # fmt: skip
        ttft["ratio_http_over_in_process"] = ttft["http"]["median"] / ttft["in_process"]["median"]
        main_median = ttft["in_process_main_thread"]["median"]
        ttft["ratio_http_over_in_process_main_thread"] = ttft["http"]["median"] / main_median
        log(
            f"[serve {preset}] TTFT in-process {ttft['in_process']['median']:.3f}s, HTTP {ttft['http']['median']:.3f}s, server engine {ttft['server_engine_mean']:.3f}s"
        )
        rows = {"per_row": [], "merged": [], "sequential": []}
        for round_ in range(warmup + repeats):
            measured = {
                "per_row": _concurrent(server.url, videos[1:], BENCH_QUESTION, new_tokens),
                "merged": _concurrent(merged.url, [base] * clients, BENCH_QUESTION, new_tokens),
                "sequential": _sequential(server.url, videos[1:], BENCH_QUESTION, new_tokens),
            }
            if round_ >= warmup:
                for key, value in measured.items():
                    rows[key].append(value)
            log(
                f"[serve {preset}] round {round_}: "
                + ", ".join(f"{k} {v['tokens_per_s']:.1f} tok/s" for k, v in measured.items())
            )
        throughput = {key: {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs), "runs": runs}
                      for key, runs in rows.items()}  # fmt: skip
        throughput["per_row_over_merged"] = (
            throughput["per_row"]["tokens_per_s"] / throughput["merged"]["tokens_per_s"]
        )
        throughput["per_row_over_sequential"] = (
            throughput["per_row"]["tokens_per_s"] / throughput["sequential"]["tokens_per_s"]
        )
        merged.stop()
        merged = None
        log(f"[serve {preset}] asking while a {internalize_frames}-frame video internalizes")
        long_video = _write_noise_video(work / "long.mp4", internalize_frames, seed=999, size=512)
        during = _during_internalization(
            server.url, videos[0], BENCH_QUESTION, long_video, idle_rounds=max(3, repeats)
        )
    finally:
        if merged is not None:
            merged.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)  # the stores, clips and downloaded adapters
    results = {
        "benchmark": "serve",
        "preset": preset,
        "machine": machine_info(),
        "settings": {
            "clients": clients,
            "new_tokens": new_tokens,
            "repeats": repeats,
            "warmup": warmup,
            "internalize_frames": internalize_frames,
            "threads_per_process": threads,
            "question": BENCH_QUESTION,
            "adapter_rank": adapter.rank,
        },
        "ttft": ttft,
        "throughput": throughput,
        "during_internalization": during,
        "targets": {
            "ttft_ratio_max": 1.10,
            "per_row_over_merged_min": 0.8,
            "per_row_over_sequential_min": 2.5,
        },
    }
    out_dir = Path(out_dir)
    write_json(out_dir / f"serve_{preset}.json", results)
    plot_serve(results, out_dir / f"serve_{preset}.png")
    return results
