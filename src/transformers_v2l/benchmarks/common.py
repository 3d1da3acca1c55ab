"""Shared machinery of the benchmarks: interleaved timing, memory caps, result files (models: `models.py`).

Every benchmark follows the same rules, so that figures taken on a shared 2-core machine mean something:

* Models have the real SmolVLM2 shapes with random weights (time does not depend on the weights), built
  directly in bf16, and run with 2 threads.
* All conditions of one benchmark are measured in one process, *interleaved*: each round runs every
  condition once, in a rotated order, after warm-up rounds. We report medians of at least 5 rounds and
  ratios between conditions, which stay stable when other jobs share the machine. The load average is
  recorded with every result.
* Peak memory is measured in a fresh subprocess per condition (`run_isolated`), with a watchdog that kills
  the child above a memory cap, so a condition that would take the machine down is recorded instead.
* Results are written atomically (`write_json`, `save_figure`): a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import require
from ..training.utils import atomic_path, atomic_write_text

__all__ = [
    "Sample",
    "interleaved",
    "log_progress",
    "machine_info",
    "new_figure",
    "ratio",
    "ratios",
    "run_isolated",
    "save_figure",
    "set_threads",
    "summarize",
    "timed",
    "write_json",
]


# ---- environment ---------------------------------------------------------------------------------
def set_threads(num_threads: int | None = None) -> None:
    """Use `num_threads` intra-op threads (default `$V2L_BENCH_THREADS`, else 2), one inter-op thread if still possible.

    Args:
        num_threads: intra-op threads; `None` reads `$V2L_BENCH_THREADS` (default 2).

    Example:
        ```python
        set_threads(1)  # before building the models
        ```
    """
    torch.set_num_threads(num_threads or int(os.environ.get("V2L_BENCH_THREADS", "2")))
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
        torch.set_num_interop_threads(1)


def machine_info() -> dict[str, Any]:
    """CPU, memory, library versions, threads and the current load average.

    Returns:
        A JSON-able dict: `cpu`, `cpu_flags`, `logical_cpus`, `torch_threads`, library versions,
        `loadavg`, `time` and, with `psutil`, `memory_total_gib`.

    Example:
        ```python
        write_json("results/machine.json", machine_info())
        ```
    """
    import transformers

    cpu = platform.processor() or platform.machine()
    flags: list[str] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                flags = sorted(set(line.split(":", 1)[1].split()) & set(wanted))
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_flags": flags,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "loadavg": list(os.getloadavg()),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with contextlib.suppress(ImportError):
        import psutil

        info["memory_total_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    return info


# ---- timing --------------------------------------------------------------------------------------
def summarize(samples: list[float]) -> dict[str, Any]:
    """Median, min, max and the raw samples (seconds).

    Args:
        samples: timings in seconds (at least one).

    Returns:
        `{"median", "min", "max", "n", "samples"}`.

    Example:
        ```python
        summarize([0.12, 0.10, 0.11])["median"]  # 0.11
        ```
    """
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
        "samples": [round(s, 6) for s in samples],
    }


class Sample(float):
    """A self-timed sample: wall seconds (the float value) and the process CPU seconds of the same span.

    Args:
        wall: wall-clock seconds.
        cpu: process CPU seconds (all threads).

    Example:
        ```python
        sample = Sample(0.25, 0.48)
        float(sample), sample.cpu  # (0.25, 0.48)
        ```
    """

    cpu: float

    def __new__(cls, wall: float, cpu: float) -> Sample:
        sample = super().__new__(cls, wall)
        sample.cpu = cpu
        return sample


def timed(fn: Callable[[], Any]) -> Sample:
    """Run `fn()` and return its wall and process CPU time, for conditions that time only part of a call.

    Args:
        fn: the zero-argument callable to time.

    Returns:
        A `Sample`: the wall seconds, with `.cpu` the process CPU seconds.

    Example:
        ```python
        def merged_query():
            with adapter.merge_into(vlm):  # not timed
                return timed(lambda: first_token(vlm, inputs))

        stats = interleaved({"merged": merged_query})
        ```
    """
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return Sample(time.perf_counter() - wall, time.process_time() - cpu)


def interleaved(
    conditions: dict[str, Callable[[], Any]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Time conditions in interleaved rounds: every round runs each condition once, in rotated order.

    Both wall time and process CPU time (all threads) are recorded. On a machine shared with other jobs, wall
    time includes waiting for a core; CPU time counts the work done, so its ratios are steadier.

    Args:
        conditions: `{name: zero-argument callable}`; each call is one timed sample. A callable that
            returns a `Sample` (see `timed`) or a float reports its own time (for setup that must not be
            timed, like merging an adapter).
        repeats: timed rounds (at least 5 for published figures).
        warmup: untimed rounds first.
        progress: called with a short message after each round (for logging).

    Returns:
        `{name: summary}`: `summarize(wall samples)` plus `cpu` (`summarize(CPU samples)`) and the load
        averages `load_before` / `load_after`.

    Example:
        ```python
        stats = interleaved({"a": f, "b": g}, repeats=5)
        stats["b"]["median"] / stats["a"]["median"]
        ```
    """
    names = list(conditions)
    walls: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    load_before = os.getloadavg()[0]
    for round_index in range(warmup + repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu = time.perf_counter(), time.process_time()
            result = conditions[name]()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if isinstance(result, float):  # the condition timed its own critical section
                wall, cpu = float(result), getattr(result, "cpu", float("nan"))
            if round_index >= warmup:
                walls[name].append(wall)
                cpus[name].append(cpu)
        if progress is not None:
            kind = "warm-up" if round_index < warmup else "round"
            progress(f"{kind} {round_index + 1}/{warmup + repeats} (load {os.getloadavg()[0]:.1f})")
    load_after = os.getloadavg()[0]
    return {
        name: {**summarize(walls[name]), "cpu": summarize(cpus[name]), "load_before": load_before,
               "load_after": load_after}
        for name in names
    }  # fmt: skip


# ---- memory ----------------------------------------------------------------------------------------
def run_isolated(
    function: str,
    kwargs: dict[str, Any],
    *,
    memory_cap_gib: float = 10.0,
    timeout_s: float = 3600.0,
    poll_s: float = 0.1,
) -> dict[str, Any]:
    """Run `module:function(**kwargs)` in a fresh Python process and measure its peak memory.

    A watchdog samples the child's resident set size; above `memory_cap_gib` it kills the child and the
    result says so (`status: "memory_cap"`), so a condition that would exhaust the machine is recorded
    instead of taking it down. The child also reports its own `ru_maxrss`.

    Args:
        function: `"package.module:function"`; it must take JSON-able keyword arguments and return a
            JSON-able dict.
        kwargs: its keyword arguments.
        memory_cap_gib: resident-set cap; the child is killed above it.
        timeout_s: wall-clock limit.
        poll_s: watchdog sampling period.

    Returns:
        `{"status": "ok" | "memory_cap" | "timeout" | "error", "peak_rss_gib", "wall_s", "result", "stderr_tail"}`.

    Example:
        ```python
        run_isolated("transformers_v2l.benchmarks.token_load:measure_condition", {"condition": "plain"})
        ```
    """
    psutil = require("psutil", "benchmarks", "Measuring a benchmark's peak memory")

    module, name = function.split(":")
    code = (
        "import json, resource, sys\n"
        f"from {module} import {name} as f\n"
        "out = f(**json.loads(sys.argv[1]))\n"
        "out['ru_maxrss_gib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20\n"
        "print('@@RESULT@@' + json.dumps(out))\n"
    )
    with tempfile.TemporaryFile(mode="w+") as stdout, tempfile.TemporaryFile(mode="w+") as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(kwargs)],
            stdout=stdout,
            stderr=stderr,
            env=os.environ.copy(),
        )
        proc = psutil.Process(child.pid)
        peak, status = 0, None
        while child.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, proc.memory_info().rss)
            if peak > memory_cap_gib * 2**30:
                status = "memory_cap"
            elif time.perf_counter() - start > timeout_s:
                status = "timeout"
            if status:
                child.kill()
                child.wait()
                break
            time.sleep(poll_s)
        wall = time.perf_counter() - start
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    result = None
    for line in out.splitlines():
        if line.startswith("@@RESULT@@"):
            result = json.loads(line[len("@@RESULT@@") :])
    if status is None:
        status = "ok" if child.returncode == 0 and result is not None else "error"
    peak_gib = peak / 2**30
    if result and "ru_maxrss_gib" in result:
        peak_gib = max(peak_gib, result["ru_maxrss_gib"])
    return {
        "status": status,
        "returncode": child.returncode,
        "peak_rss_gib": round(peak_gib, 3),
        "wall_s": round(wall, 2),
        "result": result,
        "stderr_tail": err[-2000:] if status != "ok" else "",
    }


# ---- result files ------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, (torch.dtype, Path)):
        return str(value)
    return value


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write `data` as indented JSON atomically (temporary file, then rename).

    Args:
        path: target file; parent folders are created.
        data: JSON-able data (numpy scalars, dtypes and paths are converted).

    Returns:
        The path written.

    Example:
        ```python
        write_json("benchmarks/results/ttft_500m.json", results)
        ```
    """
    return atomic_write_text(path, json.dumps(_jsonable(data), indent=2) + "\n")


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure atomically as PNG and close it.

    Args:
        fig: a `matplotlib.figure.Figure`.
        path: target `.png` file.

    Returns:
        The path written.

    Example:
        ```python
        fig, (ax,) = new_figure()
        ax.plot([1, 5, 10], [0.9, 0.3, 0.2])
        save_figure(fig, "curve.png")
        ```
    """
    require("matplotlib", "benchmarks", "Plotting benchmark results")
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return Path(path)


def new_figure(ncols: int = 1, width: float = 5.0, height: float = 3.6):
    """A `(figure, axes)` pair with the Agg backend (no display needed).

    Args:
        ncols: panels side by side.
        width: width of one panel in inches.
        height: height in inches.

    Returns:
        `(figure, [axes per panel])`.

    Example:
        ```python
        fig, (left, right) = new_figure(2)
        ```
    """
    matplotlib = require("matplotlib", "benchmarks", "Plotting benchmark results")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(axes[0])


@contextlib.contextmanager
def log_progress(prefix: str, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A logger callable that prints `[prefix] message` to stderr with the elapsed time.

    Args:
        prefix: the tag of every line, for example `"ttft 500m"`.
        enabled: `False` makes the logger silent.

    Returns:
        A context manager that yields the logger, `log(message)`.

    Example:
        ```python
        with log_progress("ttft 500m") as log:
            log("12 frames at 384 px")  # [ttft 500m     0.0s] 12 frames at 384 px
        ```
    """
    start = time.perf_counter()

    def log(message: str) -> None:
        if enabled:
            print(f"[{prefix} {time.perf_counter() - start:7.1f}s] {message}", file=sys.stderr, flush=True)

    yield log


def ratio(stats: dict[str, dict[str, Any]], numerator: str, denominator: str) -> float:
    """`median(numerator) / median(denominator)` of wall times.

    Args:
        stats: the result of `interleaved`.
        numerator: a condition name.
        denominator: another condition name.

    Returns:
        The ratio of the wall-time medians.

    Example:
        ```python
        ratio(interleaved({"video": f, "adapter": g}), "video", "adapter")  # the speedup
        ```
    """
    return stats[numerator]["median"] / stats[denominator]["median"]


def ratios(stats: dict[str, dict[str, Any]], numerator: str, denominator: str) -> dict[str, float]:
    """Three estimates of `numerator / denominator` from one interleaved run.

    Args:
        stats: the result of `interleaved`.
        numerator: a condition name.
        denominator: another condition name.

    Returns:
        `{"wall": ratio of wall medians, "wall_paired": median of per-round wall ratios (robust to load
        drifting between rounds), "cpu": ratio of CPU-time medians (robust to waiting for a core)}`.

    Example:
        ```python
        ratios(stats, "video_in_context", "video2lora")["wall_paired"]
        ```
    """
    a, b = stats[numerator], stats[denominator]
    paired = statistics.median(x / y for x, y in zip(a["samples"], b["samples"]))
    cpu_a, cpu_b = a.get("cpu", {}).get("median"), b.get("cpu", {}).get("median")
    cpu = cpu_a / cpu_b if cpu_a and cpu_b and cpu_a == cpu_a and cpu_b == cpu_b else None
    return {"wall": a["median"] / b["median"], "wall_paired": paired, "cpu": cpu}
