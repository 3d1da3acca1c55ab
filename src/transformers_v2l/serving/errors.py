"""The errors `v2l serve` answers with: typed, each with its HTTP status and an OpenAI-style error code.

Every error is a `Video2LoraError`, so the library's own handlers catch them, and names the problem
(the field, the file, the limit) in its message, which the server sends to the client unchanged.
"""

from __future__ import annotations

from ..errors import InvalidArgumentError, Video2LoraError

__all__ = [
    "AuthenticationError",
    "InvalidRequestError",
    "OverloadedError",
    "ServingError",
    "StoreMismatchError",
    "UnknownVideoError",
    "UploadRejectedError",
    "VideoNotReadyError",
]


class ServingError(Video2LoraError):
    """Base class of the server's errors: an HTTP status, an error code and a message for the client.

    Args:
        message: what went wrong, for the client.
        status_code: the HTTP status of the answer.
        code: a short machine-readable code (OpenAI's `error.code`).
        param: the request field at fault, if any.

    Example:
        ```python
        try:
            raise ServingError("Something failed.", status_code=500, code="internal_error")
        except Video2LoraError as error:
            print(error.status_code, error)
        ```
    """

    status_code = 500
    code = "internal_error"
    error_type = "server_error"

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None,
                 param: str | None = None):  # fmt: skip
        super().__init__(message)
        self.status_code = status_code or type(self).status_code
        self.code = code or type(self).code
        self.param = param

    def to_dict(self) -> dict:
        """The OpenAI-style error body: `{"error": {"message", "type", "param", "code"}}`.

        Returns:
            A JSON-able dictionary.

        Example:
            ```python
            InvalidRequestError("max_tokens must be positive.", param="max_tokens").to_dict()
            ```
        """
        return {
            "error": {"message": str(self), "type": self.error_type, "param": self.param, "code": self.code}
        }


class InvalidRequestError(ServingError, InvalidArgumentError):
    """A request field is missing, has the wrong type or is out of range (HTTP 400): an `InvalidArgumentError`.

    Args:
        message: what went wrong, for the client.
        status_code: overrides the class's HTTP status.
        code: overrides the class's error code.
        param: the request field at fault, if any.

    Example:
        ```python
        raise InvalidRequestError("temperature must be between 0 and 2, got 5.", param="temperature")
        ```
    """

    status_code = 400
    code = "invalid_request"
    error_type = "invalid_request_error"


class UploadRejectedError(InvalidRequestError):
    """An upload is not a video the server accepts: empty, not a video, truncated, too large or too long.

    The status is 400 (unreadable content), 413 (too large or too long) or 415 (not a video).

    Args:
        message: what went wrong, for the client.
        status_code: overrides the class's HTTP status.
        code: overrides the class's error code.
        param: the request field at fault, if any.

    Example:
        ```python
        raise UploadRejectedError("The upload is empty (0 bytes).", code="empty_upload")
        ```
    """

    code = "invalid_video"


class AuthenticationError(ServingError):
    """A missing or wrong bearer token on a route that needs one (HTTP 401).

    Args:
        message: what went wrong, for the client.
        status_code: overrides the class's HTTP status.
        code: overrides the class's error code.
        param: the request field at fault, if any.

    Example:
        ```python
        raise AuthenticationError("Missing bearer token: send `Authorization: Bearer <key>`.")
        ```
    """

    status_code = 401
    code = "invalid_api_key"
    error_type = "authentication_error"


class UnknownVideoError(ServingError, KeyError):
    """No video (or model) with this id in the store (HTTP 404).

    Args:
        message: what went wrong, for the client.
        status_code: overrides the class's HTTP status.
        code: overrides the class's error code.
        param: the request field at fault, if any.

    Example:
        ```python
        raise UnknownVideoError("No video with id 'vid-0123' in the store.")
        ```
    """

    status_code = 404
    code = "model_not_found"
    error_type = "invalid_request_error"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class VideoNotReadyError(ServingError):
    """The video exists but its adapter is not ready yet, or internalizing it failed (HTTP 409).

    Args:
        message: what went wrong, for the client.
        status_code: overrides the class's HTTP status.
        code: overrides the class's error code.
        param: the request field at fault, if any.

    Example:
        ```python
        raise VideoNotReadyError("Video 'vid-0123' is still processing.")
        ```
    """

    status_code = 409
    code = "video_not_ready"
    error_type = "invalid_request_error"


class OverloadedError(ServingError):
    """A bounded queue is full: the client should retry after `retry_after` seconds (HTTP 429 or 503).

    Args:
        message: what is full.
        retry_after: seconds the client should wait, sent as the `Retry-After` header.
        status_code: 429 (too many requests) or 503 (service unavailable).

    Example:
        ```python
        raise OverloadedError("64 requests are already waiting.", retry_after=1, status_code=429)
        ```
    """

    status_code = 503
    code = "overloaded"
    error_type = "server_error"

    def __init__(self, message: str, *, retry_after: int = 1, status_code: int = 503):
        super().__init__(message, status_code=status_code)
        self.retry_after = int(retry_after)


class StoreMismatchError(ServingError):
    """The store folder was written for another hypernetwork, or is not a store at all.

    Args:
        message: what went wrong, for the client.
        status_code: overrides the class's HTTP status.
        code: overrides the class's error code.
        param: the request field at fault, if any.

    Example:
        ```python
        raise StoreMismatchError("Store 'store' belongs to hypernetwork revision abc, not def.")
        ```
    """

    code = "store_mismatch"
