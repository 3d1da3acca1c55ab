"""The answering engine: continuous batching with one generated adapter per batch row.

transformers' own continuous batching (`generate_batch`, `ContinuousBatchingManager`) packs every
request into one flattened `[1, tokens]` row with paged attention and takes no per-request model
inputs, so it cannot give each request its own adapter; this engine is built on our per-row injection
instead (the update `s * (x A^T) B` with `A` and `B` stacked per batch row):

* A running batch keeps one KV cache, `[B, heads, T, head_dim]` per layer, left-padded, with an
  attention mask `[B, T]`; a row's position ids count its real tokens only.
* Each step, waiting requests (up to the free rows) are prefilled together, their first tokens are
  sampled, and their caches are merged into the running one (the shorter side is left-padded); a new
  request thus joins a running batch at the next decoding step. Otherwise the batch decodes one token.
* Finished rows (end of sequence, token budget, stop string, cancelled) leave the batch at once, and
  cache columns that only padding uses are dropped.
* Every row samples with its own parameters and random generator (`sampling.sample_rows`).

The engine runs its own module tree over the base VLM's weights (`model_access.answering_model`:
shared parameters, new module objects), with the adapter hooks registered on it once; a video
internalizing in another thread uses the original modules and never sees the engine's hooks, nor
the engine the library's feature-recording hooks.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..injection import compute_dtype, lora_forward, stack_adapters
from . import model_access
from .errors import OverloadedError
from .metrics import ServingMetrics
from .sampling import SamplingParams, TextStream, sample_rows

logger = logging.getLogger(__name__)

__all__ = ["EngineEvent", "EngineRequest", "ServingEngine"]


@dataclass
class EngineEvent:
    """What the engine reports about a request: new text, and at the end the finish reason and usage.

    Args:
        request_id: the request.
        text: text generated since the previous event (may be empty).
        token_ids: token ids generated since the previous event.
        finish_reason: `None` while generating, then `"stop"`, `"length"` or `"error"`.
        prompt_tokens: tokens in the prompt.
        completion_tokens: tokens generated so far.
        error: the error message when `finish_reason` is `"error"`.

    Example:
        ```python
        def on_event(event: EngineEvent) -> None:
            print(event.text, end="" if event.finish_reason is None else "\\n")
        ```
    """

    request_id: str
    text: str
    token_ids: list[int]
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


@dataclass
class EngineRequest:
    """One chat completion for the engine: prompt tokens, the video's adapter and the sampling parameters.

    Args:
        prompt_ids: the prompt's token ids.
        adapter: the video's `GeneratedLora`, or `None` for the base model alone.
        params: the sampling parameters.
        on_event: called from the engine thread with each `EngineEvent`; must not block.
        request_id: an id (random by default).
        submitted: when it was made (`time.perf_counter()`), the start of its time to first token.
        cancelled: set by `ServingEngine.cancel`; the engine drops the request at its next step.

    Example:
        ```python
        request = EngineRequest(prompt_ids, adapter, SamplingParams(temperature=0), on_event=print)
        engine.submit(request)
        ```
    """

    prompt_ids: list[int]
    adapter: object | None
    params: SamplingParams
    on_event: Callable[[EngineEvent], None]
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False


@dataclass
class _Row:
    request: EngineRequest
    stream: TextStream
    generator: torch.Generator | None
    last_token: int = -1
    generated: int = 0
    finish_reason: str | None = None


class _RowAdapters:
    """Per-row adapter tensors read by forward hooks on every target module of the engine's model."""

    def __init__(self, hn, model):
        self.enabled = False
        self.lora_A: dict[tuple[int, str], torch.Tensor] = {}  # (layer, module) -> [B, d_in, R]
        self.lora_B: dict[tuple[int, str], torch.Tensor] = {}  # (layer, module) -> [B, R, d_out], scaled
        self.alpha = 1.0
        self.zero = model_access.zero_adapter(hn)  # the row of a text-only request
        self.handles = []
        self.weight_dtype = next(model.parameters()).dtype
        for layer, name, module in model_access.target_modules(hn, model):
            self.handles.append(module.register_forward_hook(self._hook_for((layer, name))))

    def _hook_for(self, key: tuple[int, str]):
        def hook(module, args, output):
            if not self.enabled:
                return None
            # the update hn.answer's hooks add, in the same dtype
            return lora_forward(output, args[0], self.lora_A[key], self.lora_B[key], self.alpha)

        return hook

    def set_rows(self, adapters: list, device: torch.device) -> None:
        """Stack the rows' adapters (`None` rows get a zero update); no adapter at all disables the hooks.

        The tensors are cast once here to the dtype `hn.answer` computes in (`injection.compute_dtype`), so
        every row's update, and so its answer, is the one `hn.answer` gives.
        """
        if all(adapter is None for adapter in adapters):
            self.enabled, self.lora_A, self.lora_B, self.alpha = False, {}, {}, 1.0
            return
        dtype = next(a for a in adapters if a is not None).dtype
        zero = self.zero.to(dtype=dtype) if self.zero.dtype != dtype else self.zero
        rows = [a if a is not None else zero for a in adapters]
        # [B, L, R, d] (views when one adapter serves every row), and [B] or one float for all rows
        lora_A, lora_B, scaling = stack_adapters(rows)
        compute = compute_dtype(self.weight_dtype, dtype)
        self.alpha = 1.0 if torch.is_tensor(scaling) else float(scaling)
        scale = scaling.to(device, compute).view(-1, 1, 1) if torch.is_tensor(scaling) else None  # [B, 1, 1]

        def layer_b(t: torch.Tensor) -> torch.Tensor:  # [B, R, d_out], a per-row scaling folded in
            t = t.to(device, compute)
            return t if scale is None else t * scale

        self.lora_A = {(layer, m): t[:, layer].to(device, compute).transpose(-1, -2)  # [B, d_in, R]
                       for m, t in lora_A.items() for layer in range(t.shape[1])}  # fmt: skip
        self.lora_B = {(layer, m): layer_b(t[:, layer])  # [B, R, d_out]
                       for m, t in lora_B.items() for layer in range(t.shape[1])}  # fmt: skip
        self.enabled = True

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def _pad_left(tensor: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    if size == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = size
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class ServingEngine:
    """Continuous batching over one hypernetwork's base VLM, each request with its own adapter.

    Args:
        hn: a `Video2LoraHypernetwork` bound to its base model.
        max_batch: most requests decoding at once.
        max_waiting: most requests waiting for a row; `submit` raises `OverloadedError` beyond.
        max_prefill_tokens: most prompt tokens (padded) prefilled in one step.
        metrics: where to record time to first token and tokens; a new `ServingMetrics` by default.

    Example:
        ```python
        engine = ServingEngine(hn, max_batch=8)
        engine.start()
        engine.submit(EngineRequest(ids, adapter, SamplingParams(temperature=0), on_event=print))
        engine.stop()
        ```
    """

    def __init__(self, hn, *, max_batch: int = 16, max_waiting: int = 64, max_prefill_tokens: int = 4096,
                 metrics: ServingMetrics | None = None):  # fmt: skip
        self.hn = hn
        self.max_batch, self.max_waiting, self.max_prefill_tokens = max_batch, max_waiting, max_prefill_tokens
        self.metrics = metrics or ServingMetrics()
        self.tokenizer = model_access.tokenizer(hn)
        self.eos = model_access.eos_token_ids(hn)
        self.pad = model_access.pad_token_id(hn)
        self.device = model_access.model_device(hn)
        self.waiting: deque[EngineRequest] = deque()
        self.rows: list[_Row] = []
        self.cache = None
        self.mask: torch.Tensor | None = None  # [B, T]
        self.steps = 0
        self.model = None  # the answering copy of the base VLM, made at start
        self._adapters: _RowAdapters | None = None
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._running = False

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> ServingEngine:
        """Register the adapter hooks and start the engine thread.

        Returns:
            The engine.

        Example:
            ```python
            engine = ServingEngine(hn).start()
            ```
        """
        if self._thread is not None:
            return self
        self.model = model_access.answering_model(self.hn)
        self._adapters = _RowAdapters(self.hn, self.model)
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="v2l-engine", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the engine thread, fail unfinished requests and remove the hooks.

        Args:
            timeout: seconds to wait for the thread.

        Example:
            ```python
            engine.stop()
            ```
        """
        with self._condition:
            self._running = False
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for request in [*self.waiting, *(row.request for row in self.rows)]:
            self._emit_error(request, "The server is shutting down.")
        self.waiting.clear()
        self.rows, self.cache, self.mask = [], None, None
        if self._adapters is not None:
            self._adapters.remove()
            self._adapters, self.model = None, None

    # ---- requests -------------------------------------------------------------------------------
    def submit(self, request: EngineRequest) -> str:
        """Queue a request; it joins the running batch at the next step with a free row.

        Args:
            request: the request.

        Returns:
            The request id.

        Raises:
            OverloadedError: `max_waiting` requests are already waiting (HTTP 429).

        Example:
            ```python
            request_id = engine.submit(request)
            ```
        """
        with self._condition:
            if not self._running:
                raise OverloadedError("The engine is not running.", retry_after=5)
            if len(self.waiting) >= self.max_waiting:
                raise OverloadedError(
                    f"{len(self.waiting)} requests are already waiting for the engine (limit {self.max_waiting}); "
                    "retry shortly.",
                    retry_after=1,
                    status_code=429,
                )
            self.waiting.append(request)
            self._condition.notify_all()
        return request.request_id

    def cancel(self, request: EngineRequest) -> None:
        """Stop generating for a request (for example when its client disconnected).

        Args:
            request: a submitted request.

        Example:
            ```python
            engine.cancel(request)
            ```
        """
        request.cancelled = True
        with self._condition:
            self._condition.notify_all()

    @property
    def num_waiting(self) -> int:
        """Requests waiting for a row."""
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        """Requests in the running batch."""
        return len(self.rows)

    # ---- the loop -------------------------------------------------------------------------------
    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._condition:
                    while self._running and not self.waiting and not self.rows:
                        self._condition.wait()
                    if not self._running:
                        return
                    joining = self._take_waiting()
                try:
                    if joining:
                        self._prefill(joining)
                    elif self.rows:
                        self._decode()
                except Exception as error:  # a failed step fails its requests, never the server
                    logger.exception("Engine step failed")
                    failed = {id(r.request): r.request for r in [*self.rows, *joining]}
                    for request in failed.values():
                        self._emit_error(request, f"{type(error).__name__}: {error}")
                    self.rows, self.cache, self.mask = [], None, None

    def _take_waiting(self) -> list[_Row]:
        """Waiting requests for the free rows, within the prefill token budget (the lock is held)."""
        joining: list[_Row] = []
        longest = 0
        while self.waiting and len(self.rows) + len(joining) < self.max_batch:
            request = self.waiting[0]
            if request.cancelled:
                self.waiting.popleft()
                continue
            longest_next = max(longest, len(request.prompt_ids))
            if joining and longest_next * (len(joining) + 1) > self.max_prefill_tokens:
                break
            self.waiting.popleft()
            longest = longest_next
            params = request.params
            joining.append(_Row(request, TextStream(self.tokenizer, params.stop), params.make_generator()))
        return joining

    def _prefill(self, joining: list[_Row]) -> None:
        length = max(len(row.request.prompt_ids) for row in joining)
        ids = torch.full((len(joining), length), self.pad, dtype=torch.long)
        mask = torch.zeros((len(joining), length), dtype=torch.long)
        for i, row in enumerate(joining):
            prompt = row.request.prompt_ids
            ids[i, length - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[i, length - len(prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # [n, P], as generate() does
        self._adapters.set_rows([row.request.adapter for row in joining], self.device)
        logits, cache = model_access.forward_step(
            self.model, ids.to(self.device), mask.to(self.device), positions.to(self.device)
        )
        self._merge(joining, cache, mask.to(self.device))
        self._after_step(joining, logits)

    def _decode(self) -> None:
        ids = torch.tensor([[row.last_token] for row in self.rows], dtype=torch.long, device=self.device)
        mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)  # [B, T + 1]
        positions = mask.sum(-1, keepdim=True) - 1  # [B, 1]
        logits, self.cache = model_access.forward_step(self.model, ids, mask, positions, self.cache)
        self.mask = mask
        self._after_step(self.rows, logits)

    def _merge(self, joining: list[_Row], cache, mask: torch.Tensor) -> None:
        """Append the prefilled rows to the running batch, left-padding the shorter side's cache and mask."""
        if not self.rows:  # the hooks already hold the joining rows' adapters
            self.rows, self.cache, self.mask = list(joining), cache, mask
            return
        old_len, new_len = self.mask.shape[1], mask.shape[1]
        width = max(old_len, new_len)

        def both(old: torch.Tensor, new: torch.Tensor, dim: int) -> torch.Tensor:
            return torch.cat([_pad_left(old, width - old_len, dim), _pad_left(new, width - new_len, dim)])

        self.cache = model_access.build_cache(
            [(both(old_k, new_k, 2), both(old_v, new_v, 2))  # [B + n, heads, width, head_dim]
             for (old_k, old_v), (new_k, new_v) in zip(model_access.cache_tensors(self.cache),
                                                       model_access.cache_tensors(cache))]
        )  # fmt: skip
        self.mask = both(self.mask, mask, 1)  # [B + n, width]
        self.rows = self.rows + list(joining)
        self._adapters.set_rows([row.request.adapter for row in self.rows], self.device)

    def _after_step(self, rows: list[_Row], logits: torch.Tensor) -> None:
        """Sample each row's token, send its text, and drop finished rows from the batch."""
        tokens = sample_rows(logits, [row.request.params for row in rows], [row.generator for row in rows])
        now = time.perf_counter()
        for row, token in zip(rows, tokens):
            if row.request.cancelled:
                row.finish_reason = "cancelled"
                continue
            row.last_token = token
            row.generated += 1
            if row.generated == 1:
                self.metrics.record_first_token(now - row.request.submitted)
            params = row.request.params
            if token in self.eos and not params.ignore_eos:
                text, row.finish_reason = row.stream.finish(), "stop"
            else:
                text, stopped = row.stream.add(token)
                if stopped:
                    row.finish_reason = "stop"
                elif row.generated >= params.max_tokens:
                    text, row.finish_reason = text + row.stream.finish(), "length"
            self._emit(row, text, [token])
        self.metrics.record_tokens(len(rows))
        self.steps += 1
        if any(row.finish_reason or row.request.cancelled for row in self.rows):
            self._evict()

    def _evict(self) -> None:
        keep = [i for i, row in enumerate(self.rows) if not (row.finish_reason or row.request.cancelled)]
        if not keep:
            self.rows, self.cache, self.mask = [], None, None
            self._adapters.set_rows([], self.device)
            return
        index = torch.tensor(keep, device=self.device)
        mask = self.mask.index_select(0, index)
        used = mask.sum(0).nonzero()  # columns some remaining row still uses
        start = int(used[0]) if len(used) else 0
        self.mask = mask[:, start:]
        self.cache = model_access.build_cache(
            [(k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:])
             for k, v in model_access.cache_tensors(self.cache)]
        )  # fmt: skip
        self.rows = [self.rows[i] for i in keep]
        self._adapters.set_rows([row.request.adapter for row in self.rows], self.device)

    # ---- events ---------------------------------------------------------------------------------
    def _emit(self, row: _Row, text: str, token_ids: list[int]) -> None:
        request = row.request
        event = EngineEvent(request.request_id, text, token_ids, row.finish_reason,
                            len(request.prompt_ids), row.generated)  # fmt: skip
        try:
            request.on_event(event)
        except Exception:  # a broken consumer must not stop the batch
            logger.exception("on_event failed for request %s", request.request_id)
            request.cancelled = True

    def _emit_error(self, request: EngineRequest, message: str) -> None:
        event = EngineEvent(request.request_id, "", [], "error", len(request.prompt_ids), 0, error=message)
        try:
            request.on_event(event)
        except Exception:
            logger.exception("on_event failed for request %s", request.request_id)
