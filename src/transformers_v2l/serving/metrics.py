"""Prometheus text-format metrics for `v2l serve`, with no dependency: counters, gauges and histograms.

`GET /metrics` renders `ServingMetrics.render()`: queue lengths, running requests, adapters cached,
time to first token, generated tokens and tokens per second, internalization outcomes and times.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

__all__ = ["Histogram", "ServingMetrics"]

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INTERNALIZATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Histogram:
    """A cumulative Prometheus histogram (thread-safe).

    Args:
        buckets: the upper bounds, increasing.

    Example:
        ```python
        histogram = Histogram((0.1, 1.0))
        histogram.observe(0.3)
        histogram.lines("v2l_ttft_seconds")
        ```
    """

    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.count = 0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """Record one value.

        Args:
            value: the observation (seconds).

        Example:
            ```python
            histogram.observe(0.05)
            ```
        """
        with self._lock:
            index = next((i for i, bound in enumerate(self.buckets) if value <= bound), len(self.buckets))
            self.counts[index] += 1
            self.total += value
            self.count += 1

    def lines(self, name: str) -> list[str]:
        """The histogram's sample lines in the text format.

        Args:
            name: the metric name.

        Returns:
            `name_bucket{le=...}`, `name_sum` and `name_count` lines.

        Example:
            ```python
            "\\n".join(histogram.lines("v2l_ttft_seconds"))
            ```
        """
        with self._lock:
            lines, running = [], 0
            for bound, count in zip((*self.buckets, float("inf")), self.counts):
                running += count
                label = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(f'{name}_bucket{{le="{label}"}} {running}')
            lines += [f"{name}_sum {self.total:.6f}", f"{name}_count {self.count}"]
        return lines


class ServingMetrics:
    """Everything `/metrics` reports; the engine, the internalization worker and the routes feed it.

    Gauges are read when rendering, through callables registered with `gauge`.

    Args:
        window_seconds: the span over which `tokens_per_second` is averaged.

    Example:
        ```python
        metrics = ServingMetrics()
        metrics.gauge("v2l_engine_waiting_requests", "Requests waiting for a batch slot.", lambda: 0)
        metrics.record_first_token(0.08)
        print(metrics.render())
        ```
    """

    def __init__(self, window_seconds: float = 10.0):
        self.ttft = Histogram(TTFT_BUCKETS)
        self.internalization = Histogram(INTERNALIZATION_BUCKETS)
        self.counters: dict[tuple[str, str], float] = {}
        self.help: dict[str, tuple[str, str]] = {}
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.window_seconds = window_seconds
        self._recent: deque[tuple[float, int]] = deque()  # (time, tokens) of recent decoding steps
        self._lock = threading.Lock()

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Register a gauge read at render time.

        Args:
            name: the metric name.
            help_text: its `# HELP` line.
            read: returns the current value.

        Example:
            ```python
            metrics.gauge("v2l_adapters_cached", "Adapters in memory.", lambda: len(cache))
            ```
        """
        self.gauges[name] = (help_text, read)

    def count(self, name: str, help_text: str, amount: float = 1, labels: str = "") -> None:
        """Add to a counter.

        Args:
            name: the metric name (ends with `_total`).
            help_text: its `# HELP` line.
            amount: how much to add.
            labels: a label set such as `status="ready"`, or empty.

        Example:
            ```python
            metrics.count("v2l_uploads_total", "Uploads by outcome.", labels='status="accepted"')
            ```
        """
        with self._lock:
            self.help[name] = (help_text, "counter")
            self.counters[(name, labels)] = self.counters.get((name, labels), 0) + amount

    def record_first_token(self, seconds: float) -> None:
        """Record one request's time to first token (from submission to the engine).

        Args:
            seconds: the time to first token.

        Example:
            ```python
            metrics.record_first_token(0.05)
            ```
        """
        self.ttft.observe(seconds)

    def record_tokens(self, tokens: int) -> None:
        """Record tokens generated by one engine step (for the total and the recent tokens per second).

        Args:
            tokens: how many tokens the step produced.

        Example:
            ```python
            metrics.record_tokens(16)
            ```
        """
        self.count("v2l_generated_tokens_total", "Tokens generated for chat completions.", tokens)
        now = time.monotonic()
        with self._lock:
            self._recent.append((now, tokens))
            while self._recent and self._recent[0][0] < now - self.window_seconds:
                self._recent.popleft()

    def tokens_per_second(self) -> float:
        """Generated tokens per second over the last `window_seconds`.

        Returns:
            The rate (0 when idle).

        Example:
            ```python
            metrics.tokens_per_second()
            ```
        """
        now = time.monotonic()
        with self._lock:
            tokens = sum(count for when, count in self._recent if when >= now - self.window_seconds)
        return tokens / self.window_seconds

    def render(self) -> str:
        """The Prometheus text exposition of every metric.

        Returns:
            The text, ending with a newline.

        Example:
            ```python
            text = metrics.render()
            ```
        """
        lines = []
        for name, (help_text, read) in sorted(self.gauges.items()):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {float(read()):.15g}"]
        lines += ["# HELP v2l_tokens_per_second Generated tokens per second over the last "
                  f"{self.window_seconds:g} s.", "# TYPE v2l_tokens_per_second gauge",
                  f"v2l_tokens_per_second {self.tokens_per_second():.3f}"]  # fmt: skip
        with self._lock:
            counters = sorted(self.counters.items())
            helps = dict(self.help)
        for name in sorted({name for (name, _), _ in counters}):
            lines += [f"# HELP {name} {helps[name][0]}", f"# TYPE {name} counter"]
            for (other, labels), value in counters:
                if other == name:
                    lines.append(f"{name}{{{labels}}} {value:.15g}" if labels else f"{name} {value:.15g}")
        for name, help_text, histogram in (
            ("v2l_time_to_first_token_seconds", "Time from submission to the first token.", self.ttft),
            ("v2l_internalization_seconds", "Time to internalize one video.", self.internalization),
        ):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram", *histogram.lines(name)]
        return "\n".join(lines) + "\n"
