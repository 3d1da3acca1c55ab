"""The OpenAI-compatible chat completions protocol: request validation and response bodies.

Fields behave as in OpenAI's API: `max_tokens` (or `max_completion_tokens`), `temperature` (0 to 2,
default 1; 0 is greedy), `top_p` (default 1), `stop` (a string or up to 4), `seed`, `stream` with
`stream_options.include_usage`. `ignore_eos` is a vLLM extension for benchmarks. Features the server
does not have (several choices, log probabilities, tools, images in messages) are refused with a
message instead of being ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InvalidRequestError
from .sampling import SamplingParams

__all__ = [
    "ChatCompletionRequest",
    "completion_body",
    "new_completion_id",
    "parse_chat_request",
    "stream_chunk",
]


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_ContentPart] | None = None


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """A validated `POST /v1/chat/completions` body.

    Args:
        model: a ready video id, or the base model's name for text-only answers.
        messages: the conversation; text content only.
        max_tokens: generation budget (`max_completion_tokens` is the newer name of the same field).
        max_completion_tokens: generation budget.
        temperature: 0 to 2 (default 1); 0 is greedy decoding.
        top_p: nucleus sampling mass, in (0, 1].
        stop: a stop string or up to 4.
        seed: seed of this request's sampling.
        stream: answer with server-sent events.
        stream_options: `{"include_usage": true}` adds a last chunk with the token usage.
        n: number of choices; only 1.
        ignore_eos: keep generating after the end-of-sequence token (vLLM's extension, for benchmarks).
        logprobs: not supported (must be false).
        tools: not supported (must be absent).

    Example:
        ```python
        request = parse_chat_request({"model": "vid-...", "messages": [{"role": "user", "content": "Hi"}]})
        ```
    """

    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=200)
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    n: int | None = Field(default=None, ge=1)
    ignore_eos: bool = False
    logprobs: bool | None = None
    tools: list[Any] | None = None

    def text_messages(self) -> list[dict[str, str]]:
        """The conversation as `[{"role", "content"}]` with text content (system and developer as `system`).

        Returns:
            The messages.

        Raises:
            InvalidRequestError: a message carries images, audio or video, or no text.

        Example:
            ```python
            request.text_messages()  # [{"role": "user", "content": "What happens?"}]
            ```
        """
        messages = []
        for index, message in enumerate(self.messages):
            content = message.content
            if isinstance(content, list):
                kinds = {part.type for part in content} - {"text"}
                if kinds:
                    raise InvalidRequestError(
                        f"messages[{index}] has {', '.join(sorted(kinds))} content: this server answers from a video's "
                        "adapter, with text only. Upload the video once (POST /v1/videos) and pass its id as `model`.",
                        param=f"messages[{index}].content",
                    )
                content = "".join(part.text or "" for part in content)
            if not content:
                raise InvalidRequestError(
                    f"messages[{index}] has no text content.", param=f"messages[{index}].content"
                )
            role = "system" if message.role == "developer" else message.role
            messages.append({"role": role, "content": content})
        return messages

    def sampling(self, default_max_tokens: int, max_tokens_cap: int) -> SamplingParams:
        """The sampling parameters, with the server's defaults and caps.

        Args:
            default_max_tokens: the budget when the request gives none.
            max_tokens_cap: the largest budget the server allows.

        Returns:
            `SamplingParams`.

        Raises:
            InvalidRequestError: a budget above the cap, or more than 4 stop strings.

        Example:
            ```python
            request.sampling(default_max_tokens=256, max_tokens_cap=1024)
            ```
        """
        budget = self.max_completion_tokens or self.max_tokens or default_max_tokens
        if budget > max_tokens_cap:
            raise InvalidRequestError(f"max_tokens is {budget}, above this server's cap of {max_tokens_cap}.",
                                      param="max_tokens")  # fmt: skip
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > 4 or any(len(s) > 200 for s in stop):
            raise InvalidRequestError("stop takes at most 4 strings of at most 200 characters.", param="stop")
        return SamplingParams(
            max_tokens=budget,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=self.seed,
            stop=stop,
            ignore_eos=self.ignore_eos,
        )


def parse_chat_request(body: Any) -> ChatCompletionRequest:
    """Validate a chat completions body, refusing what the server does not support.

    Args:
        body: the decoded JSON body.

    Returns:
        The `ChatCompletionRequest`.

    Raises:
        InvalidRequestError: a field is missing, mistyped, out of range or unsupported (the message names it).

    Example:
        ```python
        parse_chat_request({"model": "vid-...", "messages": [{"role": "user", "content": "Hi"}], "n": 2})  # raises
        ```
    """
    if not isinstance(body, dict):
        raise InvalidRequestError("The body must be a JSON object.")
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidRequestError(f"{field}: {first['msg'].rstrip('.')}.", param=field) from None
    if request.n not in (None, 1):
        raise InvalidRequestError("n must be 1: this server returns one choice per request.", param="n")
    if request.logprobs:
        raise InvalidRequestError("logprobs are not supported by this server.", param="logprobs")
    if request.tools:
        raise InvalidRequestError("tools are not supported by this server.", param="tools")
    return request


def new_completion_id() -> str:
    """A fresh `chatcmpl-...` id.

    Returns:
        The id.

    Example:
        ```python
        new_completion_id()
        ```
    """
    return f"chatcmpl-{uuid.uuid4().hex}"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip


def completion_body(completion_id: str, model: str, text: str, finish_reason: str,
                    prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:  # fmt: skip
    """A non-streaming `chat.completion` body.

    Args:
        completion_id: the completion's id.
        model: the requested model (video id or base model name).
        text: the answer.
        finish_reason: `"stop"` or `"length"`.
        prompt_tokens: tokens in the prompt.
        completion_tokens: tokens generated.

    Returns:
        The JSON-able body.

    Example:
        ```python
        completion_body("chatcmpl-1", "vid-...", "A red circle.", "stop", 19, 5)
        ```
    """
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": _usage(prompt_tokens, completion_tokens),
    }


def stream_chunk(completion_id: str, model: str, *, delta: dict[str, str] | None = None,
                 finish_reason: str | None = None, usage: tuple[int, int] | None = None) -> dict[str, Any]:  # fmt: skip
    """One `chat.completion.chunk` of a streamed answer.

    Args:
        completion_id: the completion's id (the same in every chunk).
        model: the requested model.
        delta: `{"role": "assistant"}` first, then `{"content": ...}`.
        finish_reason: set in the last content chunk.
        usage: `(prompt_tokens, completion_tokens)` for the usage chunk (which has no choices).

    Returns:
        The JSON-able chunk.

    Example:
        ```python
        stream_chunk("chatcmpl-1", "vid-...", delta={"content": " A red"})
        ```
    """
    chunk = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    if usage is not None:
        chunk["choices"] = []
        chunk["usage"] = _usage(*usage)
    else:
        chunk["choices"] = [
            {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}
        ]
    return chunk
