"""`v2l serve --engine vllm --vllm-url URL`: we internalize, vLLM answers.

Uploads, the store, internalization and every route stay as with the builtin engine; only chat
completions change hands. Each ready adapter's folder in the store (`videos/<id>/adapter`, a standard
PEFT LoRA folder) is registered with vLLM under the video id (`POST /v1/load_lora_adapter`, which vLLM
offers when started with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`), and `POST /v1/chat/completions` is
forwarded to vLLM with `"model"` the video id, streamed answers passed through event by event. vLLM
then brings its scheduler, tensor parallelism and multi-node serving.

vLLM forgets runtime adapters when it restarts. A watcher thread lists vLLM's models every
`watch_interval` seconds and registers again every ready adapter it no longer lists (`DELETE
/v1/videos/{id}` drops the video's adapter from vLLM too); a chat request that vLLM answers with 404 naming its video id registers
the adapter and is sent once more. While vLLM cannot be reached, chat requests get 503 with
`Retry-After`; uploads and internalization go on.

The checkpoint's answering protocol applies as with the builtin engine: with `"recall"`, the adapter's
recalled description is generated once per video by vLLM (greedy, decoded from its token ids with our
tokenizer, as `hn.answer` decodes it) and each question follows it as the next chat turn.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from . import model_access
from .errors import InvalidRequestError, ServingError, VideoNotReadyError
from .protocol import parse_chat_request
from .server import ServerState
from .store import VIDEO_ID
from .vllm_options import VllmAdapterError, VllmOptions, VllmUnavailableError, vllm_max_lora_rank

logger = logging.getLogger(__name__)

__all__ = ["VllmBridge", "VllmServerState"]


def _error_message(response: httpx2.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message") or error.get("detail") or error)[:1000]
    return str(error)[:1000]


class VllmBridge:
    """Registers the store's adapters with a vLLM server and forwards chat completions to it.

    Args:
        hn: the `Video2LoraHypernetwork` (its tokenizer and answering protocol).
        store: the server's `VideoStore`.
        metrics: the server's `ServingMetrics`.
        options: where vLLM is (`VllmOptions`).

    Example:
        ```python
        bridge = VllmBridge(hn, store, metrics, VllmOptions(url="http://127.0.0.1:8001")).start()
        bridge.register(video)
        ```
    """

    def __init__(self, hn, store, metrics, options: VllmOptions):
        self.hn, self.store, self.metrics, self.options = hn, store, metrics, options
        self.protocol = model_access.answer_protocol(hn)
        headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        self._headers = headers
        self._client = httpx2.Client(
            base_url=options.url, headers=headers, timeout=httpx2.Timeout(30.0, connect=5.0)
        )
        self._async: httpx2.AsyncClient | None = None
        self._lock = threading.Lock()
        self.ready: set[str] = set()  # ids whose adapter is in the store (vLLM should hold them)
        self.registered: set[str] = set()  # ids vLLM holds, as far as we know
        self.refused: dict[str, str] = {}  # id -> vLLM's reason (not retried until vLLM restarts)
        self.base_model: str | None = options.model
        self.up = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        metrics.gauge("v2l_vllm_up", "1 when the vLLM server answered the last check.", lambda: int(self.up))
        metrics.gauge(
            "v2l_vllm_adapters_registered", "Adapters registered with vLLM.", lambda: len(self.registered)
        )

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> VllmBridge:
        """Start the watcher thread (its first pass registers every ready adapter of the store).

        Returns:
            The bridge.

        Example:
            ```python
            bridge.start()
            ```
        """
        with self._lock:
            self.ready = {r["id"] for r in self.store.list() if r["status"] == "ready"}
        self._thread = threading.Thread(target=self._watch, name="v2l-vllm-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the watcher thread.

        Example:
            ```python
            bridge.stop()
            ```
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception:  # the watcher must survive anything
                logger.exception("Checking vLLM failed")
            self._stop.wait(self.options.watch_interval)

    # ---- registration ---------------------------------------------------------------------------
    def adapter_path(self, video: str) -> str:
        """The adapter folder of a video as vLLM reads it.

        Args:
            video: the video id.

        Returns:
            The absolute path (under `--vllm-store-path` when given).

        Example:
            ```python
            bridge.adapter_path(video)  # "/data/v2l-store/videos/vid-.../adapter"
            ```
        """
        local = self.store.adapter_path(video)
        if self.options.store_path:
            return str(Path(self.options.store_path) / local.relative_to(self.store.root))
        return str(local.resolve())

    def register(self, video: str) -> None:
        """Register a ready video's adapter with vLLM under the video id (nothing if vLLM already holds it).

        Args:
            video: the video id.

        Raises:
            VllmUnavailableError: vLLM cannot be reached.
            VllmAdapterError: vLLM refused the adapter (its reason and the fix in the message).

        Example:
            ```python
            bridge.register(video)
            ```
        """
        body = {"lora_name": video, "lora_path": self.adapter_path(video)}
        response = self._post("/v1/load_lora_adapter", body)
        message = "" if response.status_code == 200 else _error_message(response)
        if response.status_code == 200 or (response.status_code == 400 and "already been loaded" in message):
            with self._lock:
                self.ready.add(video)
                self.registered.add(video)
                self.refused.pop(video, None)
            self.metrics.count(
                "v2l_vllm_registrations_total", "Adapter registrations with vLLM.", labels='status="ok"'
            )
            return
        self.metrics.count(
            "v2l_vllm_registrations_total", "Adapter registrations with vLLM.", labels='status="refused"'
        )
        if response.status_code == 404 and message == "Not Found":
            hint = "vLLM has no /v1/load_lora_adapter: start it with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora."
        else:
            rank = self._adapter_rank(video)
            hint = (f"vLLM refused adapter {video} (HTTP {response.status_code}): {message} Start vLLM with --enable-lora "
                    f"--max-lora-rank {vllm_max_lora_rank(rank)} or more (the adapters have rank {rank}), and make "
                    f"{self.adapter_path(video)} readable by vLLM (--vllm-store-path).")  # fmt: skip
        with self._lock:
            self.refused[video] = hint
        raise VllmAdapterError(hint)

    def _adapter_rank(self, video: str) -> int:
        try:
            return int(json.loads((self.store.adapter_path(video) / "adapter_config.json").read_text())["r"])
        except (OSError, ValueError, KeyError):
            return int(self.hn.config.effective_rank)

    def unregister(self, video: str) -> None:
        """Remove a video's adapter from vLLM (after the video was deleted); errors are logged.

        Args:
            video: the video id.

        Example:
            ```python
            bridge.unregister(video)
            ```
        """
        with self._lock:
            self.ready.discard(video)
            self.registered.discard(video)
        try:
            self._post("/v1/unload_lora_adapter", {"lora_name": video})
        except VllmUnavailableError:
            logger.warning("vLLM could not be told to drop adapter %s", video)

    async def forget(self, video: str) -> None:
        """Drop a deleted video's adapter from vLLM (the `DELETE /v1/videos/{id}` route calls this).

        Args:
            video: the video id.

        Example:
            ```python
            await bridge.forget(video)
            ```
        """
        await run_in_threadpool(self.unregister, video)

    def _post(self, path: str, body: dict) -> httpx2.Response:
        try:
            return self._client.post(path, json=body)
        except httpx2.TransportError as error:
            raise self._unavailable(error) from None

    def _unavailable(self, error: Exception) -> VllmUnavailableError:
        self.up = False
        return VllmUnavailableError(f"vLLM at {self.options.url} cannot be reached ({type(error).__name__}); "
                                    "retry when it is up.", retry_after=5)  # fmt: skip

    def sync(self) -> None:
        """One check: list vLLM's models, register every ready adapter it lacks, drop deleted videos' adapters.

        Example:
            ```python
            bridge.sync()
            ```
        """
        try:
            response = self._client.get("/v1/models")
            response.raise_for_status()
            listing = response.json()["data"]
        except (httpx2.HTTPError, ValueError, KeyError, TypeError) as error:
            if self.up:
                logger.warning("vLLM at %s stopped answering (%s); will register adapters again when it is back.",
                               self.options.url, type(error).__name__)  # fmt: skip
            self.up = False
            with self._lock:
                self.registered.clear()
                self.refused.clear()  # a restarted vLLM may take them (new settings)
            return
        if not self.up:
            logger.info("vLLM at %s is up.", self.options.url)
        self.up = True
        self._learn_base_model(listing)
        listed = {m["id"] for m in listing if m.get("parent") and VIDEO_ID.fullmatch(str(m["id"]))}
        with self._lock:
            lost = self.registered - listed
            self.registered = set(listed)
            missing = sorted(self.ready - listed - set(self.refused))
            stale = sorted(
                listed - self.ready
            )  # never dropped here: vLLM may serve other stores' adapters too
        if lost:
            logger.info("vLLM no longer holds %d adapter(s) (restarted?); registering them again.", len(lost))
        for video in stale:  # registered before this server started (it restarted), or by another server
            if self._store_ready(video):
                with self._lock:
                    self.ready.add(video)
        for video in missing:
            if self._stop.is_set():
                return
            if not self._store_ready(video):
                with self._lock:
                    self.ready.discard(video)
                continue
            try:
                self.register(video)
            except VllmAdapterError as error:
                logger.warning("%s", error)
            except VllmUnavailableError:
                return

    def _store_ready(self, video: str) -> bool:
        try:
            return self.store.get(video)["status"] == "ready"
        except KeyError:
            return False

    def _learn_base_model(self, listing: list[dict]) -> None:
        bases = [m for m in listing if not m.get("parent")]
        if self.base_model is None and bases:
            self.base_model = bases[0]["id"]
            ours = str(model_access.base_model_name(self.hn))
            if bases[0].get("root") and str(bases[0]["root"]).rstrip("/") != ours.rstrip("/"):
                logger.warning("vLLM serves %s as %r; the hypernetwork's base model is %s: they must be the same "
                               "weights.", bases[0]["root"], self.base_model, ours)  # fmt: skip

    # ---- the worker's hook ----------------------------------------------------------------------
    def on_ready(self, video: str, adapter) -> None:
        """After a video is internalized: register its adapter, then recall its description if the protocol asks.

        Args:
            video: the video id.
            adapter: its `GeneratedLora` (unused: vLLM reads the folder).

        Example:
            ```python
            worker.on_ready = bridge.on_ready
            ```
        """
        with self._lock:
            self.ready.add(video)
        try:
            self.register(video)
            if self.recalls:
                self.describe(video)
        except VllmUnavailableError:  # the watcher registers it once vLLM is back
            logger.warning("vLLM is down: adapter %s will be registered when it is back.", video)

    @property
    def recalls(self) -> bool:
        """Whether the checkpoint answers after recalling a description."""
        return self.protocol.get("protocol") == "recall"

    def describe(self, video: str) -> str:
        """The video's recalled description: from its job record, or generated now by vLLM (greedy) and stored.

        Args:
            video: the video id (registered with vLLM).

        Returns:
            The description.

        Raises:
            VllmUnavailableError: vLLM cannot be reached.
            ServingError: vLLM failed.

        Example:
            ```python
            bridge.describe(video)
            ```
        """
        text = self.store.get(video).get("description")
        if text is not None:
            return text
        body = {"model": video, "messages": [{"role": "user", "content": self.protocol["recall_prompt"]}],
                "temperature": 0, "max_tokens": int(self.protocol["recall_max_new_tokens"]), "return_token_ids": True}  # fmt: skip
        try:
            response = self._client.post("/v1/chat/completions", json=body, timeout=self.options.timeout)
        except httpx2.TransportError as error:
            raise self._unavailable(error) from None
        if response.status_code != 200:
            raise ServingError(f"vLLM failed to recall {video}'s description: {_error_message(response)}")
        ids = response.json()["choices"][0]["token_ids"]
        text = (
            model_access.tokenizer(self.hn).decode(ids, skip_special_tokens=True).strip()
        )  # as hn.answer decodes
        self.store.update(video, description=text)
        return text

    # ---- chat completions -----------------------------------------------------------------------
    async def chat(self, state: ServerState, body: Any):
        """Answer `POST /v1/chat/completions` through vLLM.

        Args:
            state: the server's state (settings, store, base model name, metrics).
            body: the decoded JSON body.

        Returns:
            vLLM's answer: a `JSONResponse`, or a `StreamingResponse` passing its server-sent events through.

        Raises:
            InvalidRequestError: a bad body (as with the builtin engine), or a budget above `--max-tokens`.
            UnknownVideoError: no such video. VideoNotReadyError: not ready yet.
            VllmUnavailableError: vLLM cannot be reached. VllmAdapterError: vLLM refused the adapter.

        Example:
            ```python
            response = await bridge.chat(state, {"model": video, "messages": [{"role": "user", "content": "Hi"}]})
            ```
        """
        if not isinstance(body, dict):
            raise InvalidRequestError("The body must be a JSON object.")
        chat = parse_chat_request({key: body[key] for key in ("model", "messages") if key in body})
        messages, model = chat.text_messages(), chat.model
        forward = {**body, "messages": messages}
        budget = body.get("max_completion_tokens") or body.get("max_tokens")
        if budget is None:
            forward["max_tokens"] = state.settings.default_max_tokens
        elif isinstance(budget, int) and budget > state.settings.max_tokens:
            raise InvalidRequestError(f"max_tokens is {budget}, above this server's cap of {state.settings.max_tokens}.",
                                      param="max_tokens")  # fmt: skip
        video = None
        if model == state.base_name:
            forward["model"] = await self._base_model()
        else:
            record = await run_in_threadpool(state.store.get, model)
            if record["status"] != "ready":
                error = (
                    f": {record['error']}"
                    if record["status"] == "failed"
                    else f"; retry when GET /v1/videos/{model} says ready"
                )
                raise VideoNotReadyError(f"Video {model!r} is {record['status']}{error}.")
            video = model
            if video not in self.registered:
                await run_in_threadpool(self.register, video)
            forward["model"] = video
            if self.recalls:
                await self._recall_turns(forward, video, messages)
        state.metrics.count("v2l_chat_requests_total", "Chat completions by model kind.",
                            labels='model="video"' if video else 'model="base"')  # fmt: skip
        return await self._forward(state, forward, model, video if forward["model"] == video else None)

    async def _base_model(self) -> str:
        if self.base_model is None:
            await run_in_threadpool(self.sync)
        if self.base_model is None:
            raise VllmUnavailableError(
                f"vLLM at {self.options.url} lists no base model yet; retry shortly.", retry_after=5
            )
        return self.base_model

    async def _recall_turns(self, forward: dict, video: str, messages: list[dict]) -> None:
        """The recall protocol: the question follows the recalled description, read by the frozen model or the adapter."""
        recall = self.protocol["recall_prompt"]
        if messages == [{"role": "user", "content": recall}]:  # the recall itself, from the adapter
            return
        description = await run_in_threadpool(self.describe, video)
        forward["messages"] = [{"role": "user", "content": recall}, {"role": "assistant", "content": description},
                               *messages]  # fmt: skip
        if self.protocol.get("reader") != "adapter":
            forward["model"] = await self._base_model()

    def _async_client(self) -> httpx2.AsyncClient:
        if self._async is None:  # made in the server's event loop, on first use
            timeout = httpx2.Timeout(self.options.timeout, connect=5.0)
            self._async = httpx2.AsyncClient(
                base_url=self.options.url, headers=self._headers, timeout=timeout
            )
        return self._async

    async def _forward(self, state: ServerState, forward: dict, requested: str, video: str | None):
        client, started = self._async_client(), time.perf_counter()
        for attempt in range(2):
            try:
                upstream = await client.send(client.build_request("POST", "/v1/chat/completions", json=forward),
                                             stream=True)  # fmt: skip
            except httpx2.TransportError as error:
                raise self._unavailable(error) from None
            if upstream.status_code < 400:
                break
            await upstream.aread()
            await upstream.aclose()
            message = _error_message(upstream)
            if upstream.status_code == 404 and video and video in message and attempt == 0:  # vLLM restarted
                logger.info("vLLM does not know %s (restarted?): registering it again.", video)
                with self._lock:
                    self.registered.discard(video)
                await run_in_threadpool(self.register, video)
                continue
            raise ServingError(f"vLLM: {message}", status_code=upstream.status_code,
                               code="vllm_error" if upstream.status_code >= 500 else "invalid_request")  # fmt: skip
        rename = None if forward["model"] == requested else requested
        if not forward.get("stream"):
            try:
                data = json.loads(await upstream.aread())
            finally:
                await upstream.aclose()
            data["model"] = requested
            return JSONResponse(data, status_code=upstream.status_code)
        stream = self._relay(state, upstream, rename, started)
        return StreamingResponse(
            stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @staticmethod
    async def _relay(state: ServerState, upstream: httpx2.Response, rename: str | None, started: float):
        """vLLM's server-sent events, passed through (with `"model"` renamed for base-model requests)."""
        buffer, first = b"", True
        try:
            async for chunk in upstream.aiter_bytes():
                if first:
                    state.metrics.record_first_token(time.perf_counter() - started)
                    first = False
                if rename is None:
                    yield chunk
                    continue
                buffer += chunk
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    yield _renamed(event, rename) + b"\n\n"
            if buffer:
                yield buffer
        except httpx2.HTTPError as error:  # vLLM went away mid-answer: end the stream with an error event
            message = VllmUnavailableError(
                f"vLLM stopped while answering ({type(error).__name__})."
            ).to_dict()
            yield f"data: {json.dumps(message)}\n\n".encode()
        finally:
            await upstream.aclose()


def _renamed(event: bytes, model: str) -> bytes:
    """One server-sent event with its chunk's `"model"` set to `model`."""
    if not event.startswith(b"data: {"):
        return event
    data = json.loads(event[len(b"data: ") :])
    data["model"] = model
    return b"data: " + json.dumps(data, separators=(",", ":")).encode()


class VllmServerState(ServerState):
    """A `ServerState` whose chat completions are answered by vLLM: no engine thread here, a `VllmBridge` instead.

    Args:
        hn: the `Video2LoraHypernetwork` (it still internalizes the uploads).
        settings: the `ServeSettings`.
        options: where vLLM is.

    Example:
        ```python
        state = VllmServerState(hn, ServeSettings(store="v2l-store"), VllmOptions(url="http://127.0.0.1:8001"))
        ```
    """

    def __init__(self, hn, settings, options: VllmOptions):
        super().__init__(hn, settings)
        self.bridge = VllmBridge(hn, self.store, self.metrics, options)
        self.worker.on_ready = self.bridge.on_ready
        rank = int(hn.config.effective_rank)
        logger.info("Answering with vLLM at %s. Adapters have rank %d: start vLLM with --enable-lora --max-lora-rank %d "
                    "(or more) and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True.", options.url, rank, vllm_max_lora_rank(rank))  # fmt: skip

    def _start_answering(self) -> None:  # vLLM answers: the watcher instead of the engine thread
        self.bridge.start()

    def _stop_answering(self) -> None:
        self.bridge.stop()
