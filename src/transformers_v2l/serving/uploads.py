"""Receiving uploads: a streaming `multipart/form-data` reader with a size cap, and the content probe.

The body is parsed as it arrives and the `file` field is written straight into the store's `uploads/`
folder, hashed and counted on the way, so an oversized upload is refused as soon as it crosses the cap
and never held in memory. Before a video is queued, `probe_upload` reads its container (PyAV, no
decoding) and refuses empty files, files that are not videos, truncated or damaged files, and videos
longer than the duration cap, each with a message that names the problem.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from pathlib import Path
from typing import Any

from ..errors import EmptyVideoError, VideoDecodeError
from .errors import UploadRejectedError

__all__ = ["MultipartUpload", "probe_upload"]

_MAX_FIELD_BYTES = 4096  # text fields other than the file (ignored, but bounded)
_PROBE_LOCK = threading.Lock()  # warnings.catch_warnings is process-wide


class MultipartUpload:
    """Receive the `file` field of a `multipart/form-data` body into `path`, chunk by chunk.

    Args:
        content_type: the request's `Content-Type` header.
        path: where to write the file's bytes.
        max_bytes: the upload size cap.
        field: the form field that holds the file.

    Raises:
        UploadRejectedError: not a multipart body (415).

    Example:
        ```python
        upload = MultipartUpload(request.headers["content-type"], store.upload_path(), max_bytes=2**28)
        async for chunk in request.stream():
            upload.feed(chunk)
        sha256, size, filename = upload.finish()
        ```
    """

    def __init__(self, content_type: str | None, path: Path, max_bytes: int, field: str = "file"):
        from python_multipart.multipart import MultipartParser, parse_options_header

        self._parse_options = parse_options_header
        kind, options = parse_options_header(content_type or "")
        if kind != b"multipart/form-data" or not options.get(b"boundary"):
            raise UploadRejectedError(
                f"Upload the video as multipart/form-data with a `{field}` field (got Content-Type "
                f"{(content_type or 'none')[:100]!r}), for example `curl -F {field}=@clip.mp4 URL/v1/videos`.",
                status_code=415,
                code="unsupported_media_type",
            )
        self.path, self.max_bytes, self.field = path, max_bytes, field
        self.size, self.filename, self.found = 0, None, False
        self._digest = hashlib.sha256()
        self._handle = None
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._in_file = False
        self._other_bytes = 0
        callbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._add_header(data[start:end], None),
            "on_header_value": lambda data, start, end: self._add_header(None, data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }
        self._parser = MultipartParser(options[b"boundary"], callbacks)

    def _part_begin(self) -> None:
        self._headers, self._header_field, self._header_value = {}, b"", b""

    def _add_header(self, field: bytes | None, value: bytes | None) -> None:
        self._header_field += field or b""
        self._header_value += value or b""

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = self._parse_options(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        self._in_file = name == self.field
        if not self._in_file:
            return
        if self.found:
            raise UploadRejectedError(
                f"Send one `{self.field}` field per upload, not several.", code="too_many_files"
            )
        self.found = True
        filename = options.get(b"filename", b"").decode("utf-8", "replace")
        self.filename = Path(filename.replace("\\", "/")).name[:200] or None  # display only, never a path
        self._handle = open(self.path, "wb")  # noqa: SIM115 (closed in _part_end / close)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            self._other_bytes += end - start
            if self._other_bytes > _MAX_FIELD_BYTES:
                raise UploadRejectedError(
                    "Form fields other than the video are limited to 4 KB.", code="field_too_large"
                )
            return
        self.size += end - start
        if self.size > self.max_bytes:
            raise UploadRejectedError(
                f"The upload is larger than this server's cap of {self.max_bytes / 2**20:.0f} MB "
                "(--max-upload-mb).",
                status_code=413,
                code="upload_too_large",
            )
        chunk = data[start:end]
        self._digest.update(chunk)
        self._handle.write(chunk)

    def _part_end(self) -> None:
        if self._in_file and self._handle is not None:
            self._handle.flush()
            self._handle.close()
        self._in_file = False

    def feed(self, chunk: bytes) -> None:
        """Parse the next chunk of the body.

        Args:
            chunk: bytes as they arrived.

        Raises:
            UploadRejectedError: the file crossed the size cap (413), or the form is malformed (400).

        Example:
            ```python
            upload.feed(b"--boundary\\r\\n...")
            ```
        """
        try:
            self._parser.write(chunk)
        except UploadRejectedError:
            raise
        except Exception as error:  # python_multipart's parse errors
            raise UploadRejectedError(
                f"Malformed multipart body: {error}.", code="malformed_upload"
            ) from None

    def finish(self) -> tuple[str, int, str | None]:
        """End of the body: check that a file came.

        Returns:
            `(sha256 hex, size in bytes, the client's file name or None)`.

        Raises:
            UploadRejectedError: no `file` field, or the body ended inside it.

        Example:
            ```python
            sha256, size, filename = upload.finish()
            ```
        """
        try:
            self._parser.finalize()
        except Exception as error:
            raise UploadRejectedError(
                f"Malformed multipart body: {error}.", code="malformed_upload"
            ) from None
        if not self.found:
            raise UploadRejectedError(
                f"The form has no `{self.field}` field: upload the video as `{self.field}`, for example "
                f"`curl -F {self.field}=@clip.mp4 URL/v1/videos`.",
                code="missing_file",
            )
        if self._handle is not None and not self._handle.closed:
            raise UploadRejectedError(
                "The upload ended before the file part was complete.", code="malformed_upload"
            )
        return self._digest.hexdigest(), self.size, self.filename

    def close(self) -> None:
        """Close the file if a failed upload left it open (the caller removes it).

        Example:
            ```python
            upload.close()
            ```
        """
        if self._handle is not None and not self._handle.closed:
            self._handle.close()


def probe_upload(path: Path, *, filename: str | None, max_duration: float) -> dict[str, Any]:
    """Read a received upload's container and refuse anything the server will not internalize.

    Args:
        path: the received file.
        filename: the client's file name, used in messages instead of the server's path.
        max_duration: the longest video accepted, in seconds.

    Returns:
        `{"duration", "fps", "frames", "width", "height", "codec"}`.

    Raises:
        UploadRejectedError: empty (400), not a video (415), truncated or damaged (400), too long (413).

    Example:
        ```python
        metadata = probe_upload(path, filename="clip.mp4", max_duration=600)
        ```
    """
    from ..video_io import probe_video

    name = filename or "upload"
    if path.stat().st_size == 0:
        raise UploadRejectedError(
            f"{name!r} is empty (0 bytes): upload the video file itself.", code="empty_upload"
        )
    with _PROBE_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            metadata = probe_video(str(path))
        except EmptyVideoError as error:
            raise _rejected(error, path, name, status=415, code="no_video_stream") from None
        except VideoDecodeError as error:
            damaged = "truncated or damaged" in str(error)
            raise _rejected(error, path, name, status=400 if damaged else 415,
                            code="damaged_video" if damaged else "not_a_video") from None  # fmt: skip
    problems = [str(w.message) for w in caught if str(path) in str(w.message)]
    if problems:
        message = "; ".join(problems).replace(repr(str(path)), repr(name)).replace(str(path), name)
        raise UploadRejectedError(f"{name!r} is damaged: {message}", code="damaged_video")
    if metadata.duration > max_duration:
        raise UploadRejectedError(
            f"{name!r} lasts {metadata.duration:.1f} s, longer than this server's cap of {max_duration:g} s "
            "(--max-duration).",
            status_code=413,
            code="video_too_long",
        )
    return {"duration": round(metadata.duration, 3), "fps": round(metadata.fps, 3), "frames": metadata.total_num_frames,
            "width": metadata.width, "height": metadata.height, "codec": metadata.codec}  # fmt: skip


def _rejected(error: Exception, path: Path, name: str, *, status: int, code: str) -> UploadRejectedError:
    message = str(error).replace(repr(str(path)), repr(name)).replace(str(path), name)
    return UploadRejectedError(message, status_code=status, code=code)
