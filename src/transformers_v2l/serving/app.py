"""The HTTP routes of `v2l serve` (FastAPI): videos, models, chat completions, health, metrics and the page.

| route | what |
|---|---|
| `POST /v1/videos` | multipart upload (`file`); 202 `{"id", "status": "queued"}` (200 with the record if known) |
| `GET /v1/videos` | every video's record |
| `GET /v1/videos/{id}` | status, error, metadata, adapter summary and card |
| `GET /v1/videos/{id}/adapter` | the PEFT adapter folder as a zip archive |
| `DELETE /v1/videos/{id}` | remove the video, its job and its adapter |
| `GET /v1/models` | the base model and every ready video id |
| `POST /v1/chat/completions` | OpenAI chat completions; `"model"` is a video id or the base model |
| `GET /health` | liveness (never needs the API key) |
| `GET /metrics` | Prometheus text |
| `GET /` | the page: upload, watch, ask, stream (static, holds no data) |

Errors are JSON `{"error": {"message", "type", "param", "code"}}`; overload answers carry `Retry-After`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import json
import logging
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .engine import EngineRequest
from .errors import (
    AuthenticationError,
    InvalidRequestError,
    OverloadedError,
    ServingError,
    UploadRejectedError,
    VideoNotReadyError,
)
from .protocol import completion_body, new_completion_id, parse_chat_request, stream_chunk
from .server import ServerState, bind_socket
from .settings import ServeSettings
from .uploads import MultipartUpload, probe_upload

logger = logging.getLogger(__name__)

__all__ = ["create_app", "serve_in_background"]

PAGE = Path(__file__).parent / "static" / "index.html"
PUBLIC_ROUTES = {("GET", "/health"), ("GET", "/"), ("HEAD", "/"), ("HEAD", "/health")}
MAX_JSON_BYTES = 1 << 20


def _error_response(error: ServingError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, OverloadedError) else None
    if isinstance(error, AuthenticationError):
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(error.to_dict(), status_code=error.status_code, headers=headers)


def _video_body(state: ServerState, record: dict) -> dict:
    body = {
        "id": record["id"],
        "object": "video",
        "status": record["status"],
        "error": record.get("error"),
        "filename": record.get("filename"),
        "bytes": record.get("size"),
        "created": int(record.get("created", 0)),
        "metadata": record.get("metadata") or {},
        "adapter": record.get("adapter"),
    }
    if record.get("description") is not None:
        body["description"] = record["description"]  # what the adapter recalls (recall protocol)
    if record["status"] == "ready":
        body["adapter_card"] = state.store.adapter_card(record["id"])
    return body


async def _read_json(request: Request) -> object:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise InvalidRequestError(
                "The JSON body is larger than 1 MB.", status_code=413, code="body_too_large"
            )
    try:
        return json.loads(body)
    except ValueError as error:
        raise InvalidRequestError(f"The body is not valid JSON ({error}).", code="invalid_json") from None


def create_app(state: ServerState) -> FastAPI:
    """The FastAPI application serving `state`; its lifespan starts and stops the engine and the worker.

    Args:
        state: the `ServerState`.

    Returns:
        The application (run it with uvicorn).

    Example:
        ```python
        import uvicorn

        uvicorn.run(create_app(ServerState(hn, ServeSettings())), host="127.0.0.1", port=8000)
        ```
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(state.start)
        try:
            yield
        finally:
            await run_in_threadpool(state.stop)

    app = FastAPI(title="v2l serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.v2l = state

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, error: ServingError):
        state.metrics.count("v2l_errors_total", "Error answers by code.", labels=f'code="{error.code}"')
        return _error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        message = (
            f"No route {request.method} {request.url.path}."
            if error.status_code in (404, 405)
            else str(error.detail)
        )
        return _error_response(ServingError(message, status_code=error.status_code, code=code))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception):
        logger.exception("Unexpected error on %s %s", request.method, request.url.path)
        return _error_response(ServingError(f"Internal error: {type(error).__name__}.", status_code=500))

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        key = state.settings.api_key
        if key and (request.method, request.url.path) not in PUBLIC_ROUTES:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
                message = "Missing or wrong API key: send `Authorization: Bearer <key>`."
                return _error_response(AuthenticationError(message))
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "model": state.base_name,
            "uptime_seconds": round(time.time() - state.started, 1),
        }

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        data = [{"id": state.base_name, "object": "model", "created": int(state.started), "owned_by": "v2l"}]
        records = await run_in_threadpool(state.store.list)
        data += [{"id": r["id"], "object": "model", "created": int(r.get("created", 0)), "owned_by": "v2l",
                  "root": state.base_name, "parent": state.base_name} for r in records if r["status"] == "ready"]  # fmt: skip
        return {"object": "list", "data": data}

    @app.post("/v1/videos")
    async def upload_video(request: Request):
        return await _receive_upload(state, request)

    @app.get("/v1/videos")
    async def list_videos():
        records = await run_in_threadpool(state.store.list)
        return {"object": "list", "data": [_video_body(state, r) for r in records]}

    @app.get("/v1/videos/{video}")
    async def get_video(video: str):
        record = await run_in_threadpool(state.store.get, video)
        return _video_body(state, record)

    @app.delete("/v1/videos/{video}")
    async def delete_video(video: str):
        await run_in_threadpool(state.store.delete, video)
        state.cache.discard(video)
        state.planner.forget(video)
        if getattr(state, "bridge", None) is not None:  # --engine vllm: vLLM drops the adapter too
            await state.bridge.forget(video)
        return {"id": video, "object": "video.deleted", "deleted": True}

    @app.get("/v1/videos/{video}/adapter")
    async def download_adapter(video: str):
        record = await run_in_threadpool(state.store.get, video)
        if record["status"] != "ready":
            raise VideoNotReadyError(f"Video {video!r} has no adapter yet (status {record['status']}).")
        data = await run_in_threadpool(_zip_folder, state.store.adapter_path(video))
        headers = {"Content-Disposition": f'attachment; filename="{video}-adapter.zip"'}
        return Response(data, media_type="application/zip", headers=headers)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await _chat(state, request)

    return app


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                archive.write(path, path.name)
    return buffer.getvalue()


async def _receive_upload(state: ServerState, request: Request) -> JSONResponse:
    settings = state.settings
    state.worker.check_room()
    if state.uploads_in_progress >= settings.max_concurrent_uploads:
        raise OverloadedError(f"{state.uploads_in_progress} uploads are already in progress; retry shortly.",
                              retry_after=2, status_code=503)  # fmt: skip
    max_bytes = int(settings.max_upload_mb * 2**20)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + 65536:
        raise UploadRejectedError(
            f"The upload is {int(declared) / 2**20:.1f} MB, larger than this server's cap of "
            f"{settings.max_upload_mb:g} MB (--max-upload-mb).",
            status_code=413,
            code="upload_too_large",
        )
    path = state.store.upload_path()
    state.uploads_in_progress += 1
    upload = None
    try:
        upload = MultipartUpload(request.headers.get("content-type"), path, max_bytes)
        async for chunk in request.stream():
            upload.feed(chunk)
        sha256, size, filename = upload.finish()
        metadata = await run_in_threadpool(
            probe_upload, path, filename=filename, max_duration=settings.max_duration
        )
        record, created = await run_in_threadpool(state.store.accept, path, sha256, size, filename, metadata)
    except BaseException as error:
        if upload is not None:
            upload.close()
        path.unlink(missing_ok=True)
        if isinstance(error, ServingError):
            state.metrics.count("v2l_uploads_total", "Uploads by outcome.", labels='status="rejected"')
        raise
    finally:
        state.uploads_in_progress -= 1
    state.metrics.count("v2l_uploads_total", "Uploads by outcome.",
                        labels='status="accepted"' if created else 'status="duplicate"')  # fmt: skip
    if created:
        state.worker.enqueue(record["id"])
        return JSONResponse({"id": record["id"], "object": "video", "status": "queued"}, status_code=202)
    return JSONResponse(_video_body(state, record), status_code=200)


async def _resolve_adapter(state: ServerState, model: str):
    if model == state.base_name:
        return None, None
    # the hot path stays on the event loop (a small JSON read, a cache hit): every hop to another thread
    # costs a scheduling delay before the first token on a busy machine
    record = state.store.get(model)
    if record["status"] != "ready":
        detail = (
            f": {record['error']}"
            if record["status"] == "failed"
            else "; retry when GET /v1/videos/{id} says ready"
        )
        raise VideoNotReadyError(f"Video {model!r} is {record['status']}{detail.replace('{id}', model)}.")
    adapter = state.cache.peek(model)
    if adapter is None:  # a miss loads the adapter from the store
        adapter = await run_in_threadpool(state.cache.get, model)
    return adapter, await state.planner.describe_async(model, adapter)


async def _chat(state: ServerState, request: Request):
    if getattr(state, "bridge", None) is not None:  # --engine vllm: vLLM answers (vllm_bridge.py)
        return await state.bridge.chat(state, await _read_json(request))
    chat = parse_chat_request(await _read_json(request))
    messages = chat.text_messages()
    params = chat.sampling(state.settings.default_max_tokens, state.settings.max_tokens)
    adapter, description = await _resolve_adapter(state, chat.model)
    plan = state.planner.plan(messages, adapter, description)
    if len(plan.prompt_ids) > state.settings.max_prompt_tokens:
        raise InvalidRequestError(f"The prompt is {len(plan.prompt_ids)} tokens, above this server's cap of "
                                  f"{state.settings.max_prompt_tokens}.", param="messages")  # fmt: skip
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    engine_request = EngineRequest(plan.prompt_ids, plan.adapter, params,
                                   on_event=lambda e: loop.call_soon_threadsafe(events.put_nowait, e))  # fmt: skip
    state.engine.submit(engine_request)
    state.metrics.count("v2l_chat_requests_total", "Chat completions by model kind.",
                        labels='model="base"' if chat.model == state.base_name else 'model="video"')  # fmt: skip
    completion_id = new_completion_id()
    if chat.stream:
        usage = bool(chat.stream_options and chat.stream_options.include_usage)
        stream = _sse(state, engine_request, events, completion_id, chat.model, usage)
        return StreamingResponse(
            stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    parts, event = [], None
    try:
        while True:
            event = await events.get()
            parts.append(event.text)
            if event.finish_reason:
                break
    finally:
        if event is None or not event.finish_reason:
            state.engine.cancel(engine_request)
    if event.finish_reason == "error":
        raise ServingError(f"Generation failed: {event.error}", status_code=500, code="generation_failed")
    return completion_body(completion_id, chat.model, "".join(parts), event.finish_reason,
                           event.prompt_tokens, event.completion_tokens)  # fmt: skip


def _sse_line(data: dict) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _sse(state, engine_request, events: asyncio.Queue, completion_id: str, model: str, usage: bool):
    finished = False
    try:
        first = True
        while True:
            event = await events.get()
            if event.finish_reason == "error":
                yield _sse_line(
                    ServingError(f"Generation failed: {event.error}", code="generation_failed").to_dict()
                )
                break
            if (
                first
            ):  # the role chunk goes out with the first token, so the first chunk marks the first token
                yield _sse_line(
                    stream_chunk(completion_id, model, delta={"role": "assistant", "content": ""})
                )
                first = False
            if event.text or event.finish_reason:
                delta = {"content": event.text} if event.text else {}
                yield _sse_line(
                    stream_chunk(completion_id, model, delta=delta, finish_reason=event.finish_reason)
                )
            if event.finish_reason:
                finished = True
                if usage:
                    yield _sse_line(stream_chunk(completion_id, model,
                                                 usage=(event.prompt_tokens, event.completion_tokens)))  # fmt: skip
                break
        yield b"data: [DONE]\n\n"
    finally:
        if not finished:  # the client went away: free the batch row
            state.engine.cancel(engine_request)


@contextlib.contextmanager
def serve_in_background(hn, settings: ServeSettings | None = None, **overrides) -> Iterator[str]:
    """Run the server in a background thread for the duration of a `with` block.

    Args:
        hn: the `Video2LoraHypernetwork` to serve.
        settings: the settings (defaults: port 0, a `v2l-store` folder here).
        **overrides: `ServeSettings` fields to change.

    Returns:
        A context manager yielding the server's base URL, for example `http://127.0.0.1:50123`.

    Example:
        ```python
        with serve_in_background(hn, store="v2l-store") as url:
            client = OpenAI(base_url=f"{url}/v1", api_key="none")
        ```
    """
    import uvicorn

    settings = settings or ServeSettings(port=0)
    for key, value in overrides.items():
        setattr(settings, key, value)
    state = ServerState(hn, settings)
    sock = bind_socket(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(create_app(state), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="v2l-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
