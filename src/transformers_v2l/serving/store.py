"""The on-disk store of `v2l serve`: uploaded videos, their job state and their adapters.

Layout (nothing in it is ever named after a request field; ids are checked against `VIDEO_ID` before
they become part of a path):

    STORE/
      store.json                 {"format", "hypernetwork_revision", "base_model"}
      uploads/                   uploads being received and adapters being written (emptied at start)
      trash/                     deleted videos being removed (emptied at start)
      videos/<id>/
        video                    the uploaded bytes
        job.json                 {"id", "status", "error", "filename", "size", "sha256", "metadata", ...}
        adapter/                 the PEFT adapter (adapter_config.json, adapter_model.safetensors, README.md)

Every change is atomic: a video appears with its `job.json` in one directory rename, `job.json` is
replaced with `os.replace`, and an adapter folder is written elsewhere and renamed into place. A
killed server leaves either the old state or the new one; at start the store re-reads every job:
a video with a complete adapter is ready, a failed one stays failed, every other one is queued again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from .errors import StoreMismatchError, UnknownVideoError

logger = logging.getLogger(__name__)

__all__ = ["STATUSES", "VIDEO_ID", "VideoStore", "video_id"]

STORE_FORMAT = "v2l-serve-store/1"
#: What a video id looks like: "vid-" and 32 hex digits of a SHA-256.
VIDEO_ID = re.compile(r"vid-[0-9a-f]{32}")
STATUSES = ("queued", "processing", "ready", "failed")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def video_id(video_sha256: str, revision: str) -> str:
    """The id of a video for a hypernetwork: the same bytes and the same hypernetwork give the same id.

    Args:
        video_sha256: SHA-256 (hex) of the video file.
        revision: the hypernetwork's revision (`model_access.hypernetwork_fingerprint`).

    Returns:
        `"vid-"` followed by 32 hex digits.

    Example:
        ```python
        video_id(hashlib.sha256(b"...").hexdigest(), "abc")
        ```
    """
    return "vid-" + hashlib.sha256(f"{revision}:{video_sha256}".encode()).hexdigest()[:32]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically: a temporary file in the same folder, fsync, then `os.replace`."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class VideoStore:
    """Uploaded videos, job states and adapters in one folder, written atomically.

    Args:
        root: the store folder (created if missing).
        revision: the hypernetwork's revision; a store written for another one is refused.
        base_model: the base model's name, recorded in `store.json`.

    Raises:
        StoreMismatchError: `root` holds a store of another hypernetwork revision, or is not a store.

    Example:
        ```python
        store = VideoStore("v2l-store", revision=hypernetwork_fingerprint(hn))
        record, created = store.accept(upload_path, sha256, size, "clip.mp4", metadata)
        ```
    """

    def __init__(self, root: str | os.PathLike, *, revision: str, base_model: str | None = None):
        self.root = Path(root)
        self.revision = revision
        self._lock = threading.RLock()
        self.root.mkdir(parents=True, exist_ok=True)
        self._check_header(base_model)
        for name in ("uploads", "trash"):  # leftovers of a killed server: never part of the store
            shutil.rmtree(self.root / name, ignore_errors=True)
            (self.root / name).mkdir()
        (self.root / "videos").mkdir(exist_ok=True)
        for entry in (self.root / "videos").iterdir():
            if not VIDEO_ID.fullmatch(entry.name):  # not ours (a rename never happens half-way)
                logger.warning("Ignoring %s: not a video folder of this store.", entry)
                continue
            for leftover in entry.glob(".*.tmp"):  # a job.json write that a killed server left unfinished
                leftover.unlink(missing_ok=True)

    def _check_header(self, base_model: str | None) -> None:
        header_path = self.root / "store.json"
        if header_path.exists():
            try:
                header = json.loads(header_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise StoreMismatchError(f"{header_path} is not a readable store header ({error}).") from None
            if header.get("format") != STORE_FORMAT:
                raise StoreMismatchError(
                    f"{self.root} is not a v2l serve store (format {header.get('format')!r})."
                )
            if header.get("hypernetwork_revision") != self.revision:
                raise StoreMismatchError(
                    f"Store {self.root} holds adapters of hypernetwork revision "
                    f"{str(header.get('hypernetwork_revision'))[:12]}, but this server runs revision "
                    f"{self.revision[:12]}; use another --store folder for this hypernetwork."
                )
        elif any(self.root.iterdir()):
            raise StoreMismatchError(
                f"{self.root} is not empty and has no store.json: not a v2l serve store."
            )
        else:
            _write_json(header_path, {"format": STORE_FORMAT, "hypernetwork_revision": self.revision,
                                      "base_model": base_model})  # fmt: skip

    # ---- paths ----------------------------------------------------------------------------------
    def _video_dir(self, video: str) -> Path:
        if not isinstance(video, str) or not VIDEO_ID.fullmatch(video):
            raise UnknownVideoError(
                f"No video with id {str(video)[:80]!r}: ids look like 'vid-' and 32 hex digits."
            )
        return self.root / "videos" / video

    def video_path(self, video: str) -> Path:
        """The uploaded file of a video.

        Args:
            video: the video id.

        Returns:
            Its path in the store.

        Raises:
            UnknownVideoError: the id is malformed.

        Example:
            ```python
            hn.internalize(str(store.video_path(video)))
            ```
        """
        return self._video_dir(video) / "video"

    def adapter_path(self, video: str) -> Path:
        """The adapter folder of a video (present once it is ready).

        Args:
            video: the video id.

        Returns:
            Its path in the store.

        Raises:
            UnknownVideoError: the id is malformed.

        Example:
            ```python
            GeneratedLora.from_pretrained(store.adapter_path(video))
            ```
        """
        return self._video_dir(video) / "adapter"

    def upload_path(self) -> Path:
        """A fresh path in `uploads/` for an upload or an adapter being written.

        Returns:
            A path that does not exist yet.

        Example:
            ```python
            path = store.upload_path()
            ```
        """
        return self.root / "uploads" / uuid.uuid4().hex

    # ---- records --------------------------------------------------------------------------------
    def get(self, video: str) -> dict[str, Any]:
        """The job record of a video.

        Args:
            video: the video id.

        Returns:
            The `job.json` content, with `status` `"ready"` whenever a complete adapter is present.

        Raises:
            UnknownVideoError: no such video.

        Example:
            ```python
            store.get(video)["status"]
            ```
        """
        directory = self._video_dir(video)
        try:
            record = json.loads((directory / "job.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UnknownVideoError(f"No video with id {video!r} in the store.") from None
        if self._adapter_complete(video):
            record["status"] = "ready"
        elif (
            record["status"] == "ready"
        ):  # the adapter is being moved into place (or a crash lost it: re-run)
            record["status"] = "processing"
        return record

    def _adapter_complete(self, video: str) -> bool:
        folder = self.adapter_path(video)
        return all((folder / name).is_file() for name in ADAPTER_FILES)

    def list(self) -> list[dict[str, Any]]:
        """Every video's record, oldest first.

        Returns:
            The records.

        Example:
            ```python
            [r["id"] for r in store.list() if r["status"] == "ready"]
            ```
        """
        records = []
        for entry in (self.root / "videos").iterdir():
            if VIDEO_ID.fullmatch(entry.name):
                try:
                    records.append(self.get(entry.name))
                except UnknownVideoError:  # deleted meanwhile
                    continue
        return sorted(records, key=lambda r: (r.get("created", 0), r["id"]))

    def unfinished(self) -> list[str]:
        """Ids of the videos to internalize (queued, or processing when the server stopped), oldest first.

        Returns:
            The ids.

        Example:
            ```python
            for video in store.unfinished():
                worker.enqueue(video)
            ```
        """
        return [r["id"] for r in self.list() if r["status"] in ("queued", "processing")]

    def accept(self, upload: Path, sha256: str, size: int, filename: str | None,
               metadata: dict[str, Any]) -> tuple[dict[str, Any], bool]:  # fmt: skip
        """Move a received, probed upload into the store as a queued job (or find the same video there).

        Args:
            upload: the received file in `uploads/`.
            sha256: its SHA-256 (hex).
            size: its size in bytes.
            filename: the client's file name, kept as metadata only (never a path).
            metadata: the probe's metadata.

        Returns:
            `(record, created)`: `created` is `False` when the same video was already in the store
            (the upload is then discarded).

        Example:
            ```python
            record, created = store.accept(path, sha256, size, "clip.mp4", {"duration": 4.0})
            ```
        """
        video = video_id(sha256, self.revision)
        with self._lock:
            target = self._video_dir(video)
            if target.exists():
                upload.unlink(missing_ok=True)
                return self.get(video), False
            staging = self.root / "uploads" / f"{uuid.uuid4().hex}.dir"
            staging.mkdir()
            os.replace(upload, staging / "video")
            now = time.time()
            record = {"id": video, "status": "queued", "error": None, "filename": filename, "size": size,
                      "sha256": sha256, "metadata": metadata, "created": now, "updated": now, "attempts": 0}  # fmt: skip
            _write_json(staging / "job.json", record)
            _fsync_dir(staging)
            os.replace(staging, target)  # the video and its job appear together
            _fsync_dir(target.parent)
        return record, True

    def update(self, video: str, **fields: Any) -> dict[str, Any] | None:
        """Change fields of a job record (for example `status`, `error`), atomically.

        Args:
            video: the video id.
            **fields: the new values.

        Returns:
            The new record, or `None` when the video was deleted meanwhile.

        Example:
            ```python
            store.update(video, status="processing")
            ```
        """
        with self._lock:
            try:
                record = self.get(video)
            except UnknownVideoError:
                return None
            record.update(fields, updated=time.time())
            _write_json(self._video_dir(video) / "job.json", record)
        return record

    def install_adapter(self, video: str, folder: Path, **fields: Any) -> dict[str, Any] | None:
        """Move a written adapter folder into place and mark the video ready.

        Args:
            video: the video id.
            folder: a complete adapter folder in `uploads/` (`GeneratedLora.save_pretrained` wrote it).
            **fields: more record fields (for example the adapter's metadata).

        Returns:
            The new record, or `None` when the video was deleted meanwhile (the folder is removed).

        Example:
            ```python
            adapter.save_pretrained(tmp := store.upload_path())
            store.install_adapter(video, tmp)
            ```
        """
        with self._lock:
            target = self.adapter_path(video)
            if not target.parent.exists():
                shutil.rmtree(folder, ignore_errors=True)
                return None
            if target.exists():  # an older, incomplete attempt (a complete one would be ready)
                shutil.rmtree(target)
            record = self.update(
                video, status="ready", error=None, **fields
            )  # ready once the folder is there
            os.replace(folder, target)
            _fsync_dir(target.parent)
            record["status"] = "ready"
            return record

    def delete(self, video: str) -> None:
        """Remove a video, its job and its adapter.

        Args:
            video: the video id.

        Raises:
            UnknownVideoError: no such video.

        Example:
            ```python
            store.delete(video)
            ```
        """
        with self._lock:
            directory = self._video_dir(video)
            if not directory.exists():
                raise UnknownVideoError(f"No video with id {video!r} in the store.")
            trash = self.root / "trash" / f"{video}.{uuid.uuid4().hex}"
            os.replace(directory, trash)
            _fsync_dir(directory.parent)
        shutil.rmtree(trash, ignore_errors=True)

    def adapter_card(self, video: str) -> str | None:
        """The adapter's model card (README.md), or `None` before the adapter exists.

        Args:
            video: the video id.

        Returns:
            The card's text.

        Example:
            ```python
            print(store.adapter_card(video))
            ```
        """
        try:
            return (self.adapter_path(video) / "README.md").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
