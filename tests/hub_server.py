"""A Hugging Face Hub-compatible HTTP server on 127.0.0.1, for round trips through the real client.

It implements, in memory, the endpoints that `huggingface_hub` 2.x uses to create repositories,
upload (preupload, LFS batch and PUT, NDJSON commits), and download (HEAD/GET `resolve` with the
`X-Repo-Commit`, `ETag`, `X-Linked-Etag` and `X-Linked-Size` headers), plus repo info, tree
listing, paths-info, branches, refs, whoami and YAML validation. Errors carry the `X-Error-Code`
header the client maps to `RepositoryNotFoundError`, `RevisionNotFoundError` and `EntryNotFoundError`.

Only the standard library is used. Set `hub.refuse_commits = 500` (or 403) to make every commit
fail, as a Hub outage or a permission problem would. `hub.inject_fault(method, path, status)` fails
chosen requests anywhere in a transfer (for example the commit, after the files were uploaded), a
given number of times or until `reset()`. Xet storage is not implemented: clients must run with
`HF_HUB_DISABLE_XET` (the test fixture sets it), and then upload through LFS.

Example:
    ```python
    with LocalHub() as hub:
        HfApi(endpoint=hub.url, token=hub.token).create_repo("tester/demo")
    ```
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

USER = "tester"
TOKEN = "hf_local_test_token"
LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".msgpack",
    ".onnx",
    ".gguf",
    ".zip",
    ".npz",
)
GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class StoredFile:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def oid(self) -> str:  # what preupload reports, and what the client compares with its local oid
        return self.sha256 if self.lfs else git_blob_sha1(self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else git_blob_sha1(self.data)


@dataclass
class Commit:
    oid: str
    files: dict[str, StoredFile]
    message: str
    parent: str | None


@dataclass
class Repo:
    repo_id: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)  # "main", "v1", "refs/pr/1" -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    num_prs: int = 0

    def resolve(self, revision: str) -> Commit | None:
        oid = self.refs.get(revision, revision)
        return self.commits.get(oid)


@dataclass
class Fault:
    """Requests that fail on purpose: `method` and a regex `path` (searched in the URL path) select them."""

    method: str
    path: str
    status: int = 500
    times: int | None = None  # failures before the fault clears itself; None: until removed
    failed: int = 0

    def fires(self, method: str, path: str) -> bool:
        if method != self.method or not re.search(self.path, path):
            return False
        if self.times is not None and self.failed >= self.times:
            return False
        self.failed += 1
        return True


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


class LocalHub:
    """The server and its in-memory state. Start it with `start()` or a `with` block."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.commit_log: list[dict] = []  # header and params of every accepted commit
        self.refuse_commits: int | None = None
        self.faults: list[Fault] = []
        self.token = TOKEN
        self.user = USER
        self.lock = threading.RLock()
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> LocalHub:
        self._thread = threading.Thread(target=self.server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self) -> None:
        with self.lock:
            self.repos.clear()
            self.lfs_objects.clear()
            self.requests.clear()
            self.commit_log.clear()
            self.refuse_commits = None
            self.faults.clear()

    def inject_fault(self, method: str, path: str, status: int = 500, *, times: int | None = None) -> Fault:
        """Answer `status` to `method` requests whose URL path matches the regex `path`.

        The next `times` matching requests fail (every one if `None`, until `reset()` or
        `faults.remove(fault)`). The request body is read first, as a server that fails after
        receiving an upload would.
        """
        fault = Fault(method, path, status, times)
        with self.lock:
            self.faults.append(fault)
        return fault

    # ---- state helpers ------------------------------------------------------------------------------
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """`{path: content}` of a repository at a revision (for assertions)."""
        with self.lock:
            commit = self.repos[repo_id].resolve(revision)
            return {path: f.data for path, f in commit.files.items()}

    def _new_commit(
        self, repo: Repo, files: dict[str, StoredFile], message: str, parent: str | None
    ) -> Commit:
        commit = Commit(
            oid=hashlib.sha1(uuid.uuid4().bytes).hexdigest(), files=files, message=message, parent=parent
        )
        repo.commits[commit.oid] = commit
        return commit

    def create_repo(self, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_id=repo_id, private=private)
        initial = self._new_commit(
            repo, {".gitattributes": StoredFile(GITATTRIBUTES, lfs=False)}, "initial commit", None
        )
        repo.refs["main"] = initial.oid
        self.repos[repo_id] = repo
        return repo


def _handler(hub: LocalHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "LocalHub/1.0"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        # ---- plumbing ------------------------------------------------------------------------
        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(
            self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"
        ):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, payload, headers: dict | None = None):
            self._send(status, json.dumps(payload).encode(), headers)

        def _error(self, error: HubError):
            headers = {"X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            if error.commit:
                headers["X-Repo-Commit"] = error.commit
            self._json(error.status, {"error": error.message}, headers)

        def _authorized(self) -> bool:
            return self.headers.get("Authorization", "") == f"Bearer {hub.token}"

        def _require_auth(self) -> None:
            if not self._authorized():
                raise HubError(401, "Invalid credentials in Authorization header")

        def _repo(self, repo_id: str, *, write: bool = False) -> Repo:
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and not self._authorized()):
                raise HubError(404 if repo is None else 401, "Repository not found", "RepoNotFound")
            if write:
                self._require_auth()
            return repo

        def _commit(self, repo: Repo, revision: str) -> Commit:
            commit = repo.resolve(unquote(revision))
            if commit is None:
                raise HubError(404, f"Invalid rev id: {unquote(revision)}", "RevisionNotFound")
            return commit

        def _dispatch(self, method: str) -> None:
            parts = urlsplit(self.path)
            path, query = parts.path, parse_qs(parts.query)
            with hub.lock:
                hub.requests.append((method, path))
            segments = [s for s in path.split("/") if s]
            try:
                with hub.lock:
                    fault = next((f for f in hub.faults if f.fires(method, path)), None)
                    if fault is not None:
                        self._body()
                        raise HubError(
                            fault.status, f"Injected fault: {method} {path} answered {fault.status}"
                        )
                    self._route(method, segments, query)
            except HubError as error:
                self._error(error)

        do_GET = lambda self: self._dispatch("GET")  # noqa: E731
        do_HEAD = lambda self: self._dispatch("HEAD")  # noqa: E731
        do_POST = lambda self: self._dispatch("POST")  # noqa: E731
        do_PUT = lambda self: self._dispatch("PUT")  # noqa: E731

        # ---- routes ----------------------------------------------------------------------------
        def _route(self, method: str, seg: list[str], query: dict) -> None:
            if method == "GET" and seg[:2] == ["api", "whoami-v2"]:
                self._require_auth()
                return self._json(
                    200, {"type": "user", "name": hub.user, "orgs": [], "auth": {"type": "access_token"}}
                )
            if method == "POST" and seg == ["api", "validate-yaml"]:
                self._body()
                return self._json(200, {"errors": [], "warnings": []})
            if method == "POST" and seg == ["api", "repos", "create"]:
                return self._create_repo()
            if seg[:2] == ["api", "models"] and len(seg) >= 4:
                repo_id, rest = f"{seg[2]}/{seg[3]}", seg[4:]
                if method == "GET" and not rest:
                    return self._repo_info(repo_id, "main")
                if method == "GET" and rest[0] == "revision":
                    return self._repo_info(repo_id, "/".join(rest[1:]))
                if method == "POST" and rest[0] == "preupload":
                    return self._preupload(repo_id, "/".join(rest[1:]), query)
                if method == "POST" and rest[0] == "commit":
                    return self._commit_files(repo_id, "/".join(rest[1:]), query)
                if method == "POST" and rest[0] == "branch":
                    return self._create_branch(repo_id, "/".join(rest[1:]))
                if method == "GET" and rest[0] == "tree":
                    return self._tree(repo_id, rest[1], "/".join(rest[2:]), query)
                if method == "POST" and rest[0] == "paths-info":
                    return self._paths_info(repo_id, "/".join(rest[1:]))
                if method == "GET" and rest[0] == "refs":
                    return self._refs(repo_id)
            if method == "POST" and len(seg) == 6 and seg[2:] == ["info", "lfs", "objects", "batch"]:
                return self._lfs_batch(f"{seg[0]}/{seg[1].removesuffix('.git')}")
            if method == "PUT" and len(seg) == 2 and seg[0] == "_lfs_upload":
                return self._lfs_put(seg[1])
            if method in ("GET", "HEAD") and len(seg) >= 5 and seg[2] == "resolve":
                return self._resolve(f"{seg[0]}/{seg[1]}", seg[3], "/".join(unquote(s) for s in seg[4:]))
            raise HubError(404, f"No route for {method} /{'/'.join(seg)}")

        def _create_repo(self) -> None:
            self._require_auth()
            payload = json.loads(self._body() or b"{}")
            repo_id = f"{payload.get('organization') or hub.user}/{payload['name']}"
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            if repo_id in hub.repos:
                body = {"error": "You already created this model repo", "url": f"{hub.url}/{repo_id}"}
                return self._json(409, body, {"X-Error-Message": body["error"]})
            hub.create_repo(repo_id, private)
            self._json(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id, "id": uuid.uuid4().hex})

        def _repo_info(self, repo_id: str, revision: str) -> None:
            repo = self._repo(repo_id)
            commit = self._commit(repo, revision)
            siblings = [
                {"rfilename": p, "size": len(f.data), "blobId": git_blob_sha1(f.data)}
                | ({"lfs": {"sha256": f.sha256, "size": len(f.data), "pointerSize": 134}} if f.lfs else {})
                for p, f in sorted(commit.files.items())
            ]
            self._json(
                200,
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "author": repo_id.split("/")[0],
                    "sha": commit.oid,
                    "private": repo.private,
                    "disabled": False,
                    "gated": False,
                    "tags": [],
                    "siblings": siblings,
                    "lastModified": "2026-11-01T00:00:00.000Z",
                    "createdAt": "2026-11-01T00:00:00.000Z",
                },
            )

        def _preupload(self, repo_id: str, revision: str, query: dict) -> None:
            repo = self._repo(repo_id, write=True)
            commit = repo.resolve(unquote(revision)) if "create_pr" not in query else None
            payload = json.loads(self._body())
            files = []
            for item in payload["files"]:
                sample = base64.b64decode(item["sample"])
                lfs = item["path"].endswith(LFS_SUFFIXES) or item["size"] > 10 * 2**20 or b"\0" in sample
                existing = commit.files.get(item["path"]) if commit else None
                files.append(
                    {
                        "path": item["path"],
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False,
                        "oid": existing.oid if existing else None,
                    }
                )
            self._json(200, {"files": files, "commitOid": commit.oid if commit else None})

        def _lfs_batch(self, repo_id: str) -> None:
            self._repo(repo_id, write=True)
            payload = json.loads(self._body())
            objects = []
            for obj in payload["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"]}
                if obj["oid"] not in hub.lfs_objects:
                    entry["actions"] = {
                        "upload": {"href": f"{hub.url}/_lfs_upload/{obj['oid']}", "header": {}}
                    }
                objects.append(entry)
            body = json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}).encode()
            self._send(200, body, content_type="application/vnd.git-lfs+json")

        def _lfs_put(self, oid: str) -> None:
            data = self._body()
            if hashlib.sha256(data).hexdigest() != oid:
                raise HubError(400, f"Uploaded content does not match sha256 {oid}")
            hub.lfs_objects[oid] = data
            self._send(200, b"", content_type="text/plain")

        def _commit_files(self, repo_id: str, revision: str, query: dict) -> None:
            repo = self._repo(repo_id, write=True)
            body = self._body()
            if hub.refuse_commits:
                raise HubError(
                    hub.refuse_commits, "The Hub refused the commit (test switch refuse_commits is on)"
                )
            revision = unquote(revision)
            base = self._commit(repo, revision)
            if revision not in repo.refs:
                raise HubError(400, f"Can only commit to a branch or a pull request, not {revision!r}")
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            header = next(line["value"] for line in lines if line["key"] == "header")
            if header.get("parentCommit") and header["parentCommit"] != base.oid:
                raise HubError(412, "A commit has happened since the parent commit. Please retry.")
            files = dict(base.files)
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "file":
                    files[value["path"]] = StoredFile(base64.b64decode(value["content"]), lfs=False)
                elif key == "lfsFile":
                    if value["oid"] not in hub.lfs_objects:
                        raise HubError(
                            422, f"LFS object {value['oid']} for {value['path']} was never uploaded"
                        )
                    files[value["path"]] = StoredFile(hub.lfs_objects[value["oid"]], lfs=True)
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: f for p, f in files.items() if not p.startswith(prefix)}
            commit = hub._new_commit(repo, files, header.get("summary", ""), base.oid)
            response = {
                "commitUrl": f"{hub.url}/{repo_id}/commit/{commit.oid}",
                "commitOid": commit.oid,
                "success": True,
            }
            if query.get("create_pr") == ["1"]:
                repo.num_prs += 1
                repo.refs[f"refs/pr/{repo.num_prs}"] = commit.oid
                response["pullRequestUrl"] = f"{hub.url}/{repo_id}/discussions/{repo.num_prs}"
            else:
                repo.refs[revision] = commit.oid
            hub.commit_log.append(
                {"repo_id": repo_id, "revision": revision, "oid": commit.oid, **header, **query}
            )
            self._json(200, response)

        def _create_branch(self, repo_id: str, branch: str) -> None:
            repo = self._repo(repo_id, write=True)
            branch = unquote(branch)
            payload = json.loads(self._body() or b"{}")
            if branch in repo.refs:
                raise HubError(409, f"Reference {branch} already exists")
            start = self._commit(repo, payload.get("startingPoint") or "main")
            repo.refs[branch] = start.oid
            self._json(200, {})

        def _entries(self, commit: Commit, paths: list[str]) -> list[dict]:
            out = []
            for path in paths:
                stored = commit.files[path]
                entry = {
                    "type": "file",
                    "path": path,
                    "size": len(stored.data),
                    "oid": git_blob_sha1(stored.data),
                }
                if stored.lfs:
                    entry["lfs"] = {"oid": stored.sha256, "size": len(stored.data), "pointerSize": 134}
                out.append(entry)
            return out

        def _tree(self, repo_id: str, revision: str, folder: str, query: dict) -> None:
            commit = self._commit(self._repo(repo_id), revision)
            prefix = f"{folder.rstrip('/')}/" if folder else ""
            recursive = query.get("recursive", ["False"])[0].lower() == "true"
            files, folders = [], set()
            for path in sorted(commit.files):
                if not path.startswith(prefix):
                    continue
                rest = path[len(prefix) :]
                if "/" in rest and not recursive:
                    folders.add(prefix + rest.split("/")[0])
                else:
                    files.append(path)
                    if recursive and "/" in rest:
                        parts = rest.split("/")[:-1]
                        folders.update(prefix + "/".join(parts[: i + 1]) for i in range(len(parts)))
            listing = [{"type": "directory", "path": d, "oid": "0" * 40} for d in sorted(folders)]
            self._json(200, listing + self._entries(commit, files))

        def _paths_info(self, repo_id: str, revision: str) -> None:
            commit = self._commit(self._repo(repo_id), revision)
            raw = self._body()
            if self.headers.get("Content-Type", "").startswith("application/json"):
                paths = json.loads(raw).get("paths", [])
            else:
                paths = parse_qs(raw.decode()).get("paths", [])
            self._json(200, self._entries(commit, [p for p in paths if p in commit.files]))

        def _refs(self, repo_id: str) -> None:
            repo = self._repo(repo_id)
            branches = [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                for name, oid in repo.refs.items()
                if not name.startswith("refs/")
            ]
            prs = [
                {"name": n, "ref": n, "targetCommit": o}
                for n, o in repo.refs.items()
                if n.startswith("refs/pr/")
            ]
            self._json(200, {"branches": branches, "converts": [], "tags": [], "pullRequests": prs})

        def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
            commit = self._commit(self._repo(repo_id), revision)
            stored = commit.files.get(filename)
            if stored is None:
                raise HubError(404, "Entry not found", "EntryNotFound", commit=commit.oid)
            headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{stored.etag}"', "Accept-Ranges": "bytes"}
            if stored.lfs:
                headers["X-Linked-Etag"] = f'"{stored.sha256}"'
                headers["X-Linked-Size"] = str(len(stored.data))
            data, status = stored.data, 200
            range_header = self.headers.get("Range", "")
            if range_header.startswith("bytes="):
                start, _, end = range_header[len("bytes=") :].partition("-")
                first, last = int(start or 0), int(end) if end else len(data) - 1
                headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
                data, status = data[first : last + 1], 206
            self._send(status, data, headers, content_type="application/octet-stream")

    return Handler
