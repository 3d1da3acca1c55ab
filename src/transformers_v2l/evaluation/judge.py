"""An LLM judge over any OpenAI-compatible `/v1/chat/completions` endpoint, with a disk cache.

The rubric follows the paper's appendix A. The judge sees the task prompt, the reference(s) and
one candidate output, never the video and never which model wrote the candidate:

* **captioning** ("caption"): how much of the reference's content the candidate covers. Details
  the reference does not mention are not penalized unless they contradict it.
* **question answering** ("qa"): the judge first extracts the answer that the output gives, then
  compares that answer with the reference, so a verbose but correct output is not penalized.

The judge replies with JSON holding an integer score from 1 to 5, which is rescaled to [0, 1] as
`(score - 1) / 4`. Requests use temperature 0 and ask for a JSON object (`response_format`), which
vLLM and llama.cpp's server enforce with a grammar; `transformers serve` ignores the field, so the
reply parser also reads scores out of imperfect JSON.

Robustness:

* connection errors, timeouts, HTTP 429 and 5xx are retried with exponential backoff;
* a reply with no usable score (malformed) is a failed judgment: it is returned with `error` set
  and is **never** cached;
* judgments are cached on disk by a SHA-256 content hash of the judge model, the task, the
  prompt, the candidate, the references and the rubric version; each entry is written to a
  temporary file, fsynced and moved into place with `os.replace`, so a crash, a timeout, a server
  error or a malformed reply can neither lose nor corrupt an existing entry. Unreadable entries
  are treated as missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import require
from ..training.utils import atomic_write_text

__all__ = [
    "RUBRIC_VERSION",
    "JudgeCache",
    "Judgment",
    "LLMJudge",
    "MalformedJudgeReply",
    "build_judge_messages",
    "parse_judge_reply",
    "rescale_score",
]

logger = logging.getLogger(__name__)

#: Bump when the prompts below change, so that old cached judgments are not reused.
RUBRIC_VERSION = "v2l-judge-1"

_SYSTEM = (
    "You are an impartial evaluator of a vision-language model's outputs. You do not see the "
    "video: judge the candidate only against the reference. Reply with a single JSON object and "
    "nothing else."
)

_CAPTION_TEMPLATE = """Task given to the model:
{prompt}

Reference description{plural}:
{references}

Candidate description:
{candidate}

Score how much of the reference's content the candidate covers, on this scale:
5 = covers all important content of the reference, with no contradiction
4 = covers most of the important content
3 = covers about half of the important content
2 = covers a little of the content
1 = covers none of it, or contradicts the reference
Details that the reference does not mention are not penalized unless they directly contradict it.
Reply with JSON only: {{"score": <integer 1-5>, "reason": "<one short sentence>"}}"""

_QA_TEMPLATE = """Question asked to the model:
{prompt}

Reference answer{plural} (any one is correct):
{references}

Model output:
{candidate}

First extract the answer that the model output gives to the question, as a short phrase. Then
compare the extracted answer with the reference answer. Do not penalize extra words or detail
around a correct answer.
5 = same meaning as the reference
4 = correct with a minor inaccuracy or omission
3 = partially correct
2 = mostly incorrect
1 = wrong, contradicts the reference, or gives no answer
Reply with JSON only: {{"extracted_answer": "<short phrase>", "score": <integer 1-5>, "reason": "<one short sentence>"}}"""

_TEMPLATES = {"caption": _CAPTION_TEMPLATE, "qa": _QA_TEMPLATE}


class MalformedJudgeReply(ValueError):
    """The judge's reply holds no usable score from 1 to 5.

    Example:
        ```python
        >>> parse_judge_reply("I cannot judge this.")
        Traceback (most recent call last):
        transformers_v2l.evaluation.judge.MalformedJudgeReply: No score from 1 to 5 in the judge reply: 'I cannot judge this.'
        ```
    """


def rescale_score(score: int) -> float:
    """Map a 1-5 judge score linearly to [0, 1], as `(score - 1) / 4`.

    Args:
        score (`int`): An integer from 1 to 5.

    Returns:
        `float`: 0.0 for 1, 0.25 for 2, ..., 1.0 for 5.

    Example:
        ```python
        >>> rescale_score(4)
        0.75
        ```
    """
    if not 1 <= score <= 5:
        raise ValueError(f"Judge scores go from 1 to 5, got {score}.")
    return (score - 1) / 4


def build_judge_messages(task: str, prompt: str, candidate: str, references: Sequence[str]) -> list[dict]:
    """The chat messages sent to the judge for one candidate.

    Args:
        task (`str`): "caption" or "qa".
        prompt (`str`): The prompt or question the evaluated model received.
        candidate (`str`): The evaluated model's output.
        references (`Sequence[str]`): The reference caption(s) or answer(s).

    Returns:
        `list[dict]`: OpenAI-style `[{"role": "system", ...}, {"role": "user", ...}]`.

    Example:
        ```python
        >>> messages = build_judge_messages("qa", "What color is the car?", "It is red.", ["red"])
        >>> [m["role"] for m in messages]
        ['system', 'user']
        ```
    """
    if task not in _TEMPLATES:
        raise ValueError(f"`task` must be one of {sorted(_TEMPLATES)}, got {task!r}.")
    refs = list(references)
    if not refs:
        raise ValueError("The judge needs at least one reference.")
    user = _TEMPLATES[task].format(
        prompt=prompt.strip(),
        plural="s" if len(refs) > 1 else "",
        references="\n".join(f"- {ref.strip()}" for ref in refs),
        candidate=candidate.strip() or "(empty output)",
    )
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_FENCE = re.compile(r"```(?:json)?", re.IGNORECASE)
_SCORE_FIELD = re.compile(r"""["']?score["']?\s*[:=]\s*["']?([1-5])(?![\d.])""", re.IGNORECASE)
_BARE_SCORE = re.compile(r"^\s*([1-5])\s*(?:/\s*5)?\s*\.?\s*$")


def _score_value(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and float(value).is_integer() and 1 <= value <= 5:
        return int(value)
    if isinstance(value, str) and value.strip() in {"1", "2", "3", "4", "5"}:
        return int(value.strip())
    return None


def _json_objects(text: str):
    decoder = json.JSONDecoder()
    for start, char in enumerate(text):
        if char == "{":
            try:
                obj, _ = decoder.raw_decode(text, start)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj


def parse_judge_reply(text: str) -> dict:
    """Read the score (and, for QA, the extracted answer) out of a judge reply.

    In order: the first JSON object in the reply that has a `score` from 1 to 5; else a
    `score: N` field written loosely; else a reply that is only a number from 1 to 5 (optionally
    "N/5"). `<think>` blocks and code fences are ignored. Anything else is malformed: the first
    integer of arbitrary prose is *not* taken as a score, since "there are 3 dogs" is no score.

    Args:
        text (`str`): The content of the judge's reply.

    Returns:
        `dict`: `{"score": int, "extracted_answer": str | None, "reason": str | None}`.

    Raises:
        [`MalformedJudgeReply`]: When no score can be read.

    Example:
        ```python
        >>> parse_judge_reply('```json\\n{"score": 4, "reason": "close"}\\n```')["score"]
        4
        ```
    """
    cleaned = _FENCE.sub("", _THINK.sub("", text or ""))
    for obj in _json_objects(cleaned):
        score = _score_value(obj.get("score"))
        if score is not None:
            extracted = obj.get("extracted_answer")
            reason = obj.get("reason", obj.get("explanation"))
            return {
                "score": score,
                "extracted_answer": None if extracted is None else str(extracted),
                "reason": None if reason is None else str(reason),
            }
    match = _SCORE_FIELD.search(cleaned) or _BARE_SCORE.match(cleaned)
    if match:
        return {"score": int(match.group(1)), "extracted_answer": None, "reason": None}
    raise MalformedJudgeReply(f"No score from 1 to 5 in the judge reply: {text[:200]!r}")


@dataclass
class Judgment:
    """One judged candidate.

    Attributes:
        key (`str`): The content hash that names the cache entry.
        score (`float` or `None`): The rescaled score in [0, 1]; `None` when judging failed.
        raw_score (`int` or `None`): The judge's 1-5 score.
        extracted_answer (`str` or `None`): The answer the QA judge extracted.
        reason (`str` or `None`): The judge's one-line reason.
        reply (`str` or `None`): The raw reply text.
        cached (`bool`): Whether the judgment came from the disk cache.
        error (`str` or `None`): Why judging failed (timeout, server error, malformed reply).

    Example:
        ```python
        judgment = judge.judge("qa", "What color is the car?", "It is red.", ["red"])
        if judgment.ok:
            print(judgment.raw_score, judgment.score, judgment.reason)  # 1-5, (raw - 1) / 4, one line
        ```
    """

    key: str
    score: float | None = None
    raw_score: int | None = None
    extracted_answer: str | None = None
    reason: str | None = None
    reply: str | None = None
    cached: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the judgment has a score."""
        return self.score is not None


class JudgeCache:
    """Judgments on disk, one JSON file per content hash, written atomically.

    Args:
        directory (`str` or `os.PathLike`): Where the entries live (created on first write).

    Example:
        ```python
        >>> cache = JudgeCache("judge-cache")
        >>> cache.put("ab" * 32, {"raw_score": 5})
        >>> cache.get("ab" * 32)["raw_score"]
        5
        ```
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        """The file of one entry (sharded by the first two hex digits).

        Args:
            key (`str`): A content hash from [`~LLMJudge.cache_key`].

        Returns:
            `Path`: `<directory>/<key[:2]>/<key>.json`.

        Example:
            ```python
            >>> JudgeCache("judge-cache").path("ab" * 32).parent.name
            'ab'
            ```
        """
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The cached record, or `None` when missing or unreadable.

        Args:
            key (`str`): A content hash from [`~LLMJudge.cache_key`].

        Returns:
            `dict` or `None`: The record, or `None` when there is no valid entry (a damaged one is logged
            and ignored).

        Example:
            ```python
            >>> JudgeCache("judge-cache").get("00" * 32) is None
            True
            ```
        """
        path = self.path(key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            logger.warning("Ignoring unreadable judge cache entry %s: %s", path, error)
            return None
        if not isinstance(record, dict) or _score_value(record.get("raw_score")) is None:
            logger.warning("Ignoring judge cache entry without a valid score: %s", path)
            return None
        return record

    def put(self, key: str, record: dict) -> None:
        """Write one record: temporary file in the same folder, fsync, then `os.replace`.

        Args:
            key (`str`): A content hash from [`~LLMJudge.cache_key`].
            record (`dict`): JSON-serializable; `get` only returns records with a valid `raw_score`.

        Example:
            ```python
            >>> JudgeCache("judge-cache").put("ab" * 32, {"raw_score": 4, "reason": "mostly right"})
            ```
        """
        atomic_write_text(self.path(key), json.dumps(record, ensure_ascii=False, sort_keys=True))


class _RetryableError(Exception):
    pass


class LLMJudge:
    """Judge candidates with an LLM served behind an OpenAI-compatible chat endpoint.

    Args:
        base_url (`str`): The server root, e.g. `"http://127.0.0.1:8000"` (a trailing `/v1` is
            accepted too).
        model (`str`): The model name sent in each request (part of the cache key).
        cache_dir (`str` or `os.PathLike`, *optional*): Where judgments are cached; no cache if
            `None`.
        api_key (`str`, *optional*): Sent as a bearer token; defaults to `$OPENAI_API_KEY`.
        timeout (`float`, *optional*, defaults to 120): Seconds to wait for one reply.
        max_retries (`int`, *optional*, defaults to 3): Retries after a timeout, a connection
            error, HTTP 429 or HTTP 5xx.
        backoff (`float`, *optional*, defaults to 1.0): First retry delay in seconds; doubles
            each retry, capped at `max_backoff`.
        max_backoff (`float`, *optional*, defaults to 30.0): Longest retry delay.
        max_tokens (`int`, *optional*, defaults to 1024): Reply budget (the paper's setting).
        json_mode (`bool`, *optional*, defaults to True): Send
            `response_format={"type": "json_object"}`.
        extra_body (`dict`, *optional*): More request fields (e.g. `{"seed": 0}`).
        sleep (`Callable[[float], None]`, *optional*): Replaces `time.sleep` (tests).

    Example:
        ```python
        >>> judge = LLMJudge("http://127.0.0.1:8000", "Qwen/Qwen3-30B-A3B", cache_dir="judge-cache")
        >>> judgment = judge.judge("qa", "What color is the car?", "It is a red car.", ["red"])
        >>> judgment.score  # (raw_score - 1) / 4, or None with judgment.error set
        1.0
        ```
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        cache_dir: str | os.PathLike | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        max_tokens: int = 1024,
        json_mode: bool = True,
        extra_body: dict | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._requests = require("requests", "evaluation", "The LLM judge")
        root = base_url.rstrip("/")
        root = root[: -len("/v1")] if root.endswith("/v1") else root
        self.url = f"{root}/v1/chat/completions"
        self.model = model
        self.cache = JudgeCache(cache_dir) if cache_dir is not None else None
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_tokens = max_tokens
        self.json_mode = json_mode
        self.extra_body = dict(extra_body or {})
        self._sleep = sleep
        self._local = threading.local()

    def cache_key(self, task: str, prompt: str, candidate: str, references: Sequence[str]) -> str:
        """SHA-256 of model, task, prompt, candidate, references and rubric version.

        Args:
            task (`str`): "caption" or "qa".
            prompt (`str`): The prompt or question the evaluated model received.
            candidate (`str`): The evaluated model's output.
            references (`Sequence[str]`): Reference caption(s) or answer(s).

        Returns:
            `str`: 64 hex digits, the name of the cache entry.

        Example:
            ```python
            >>> len(judge.cache_key("qa", "What color is the car?", "It is red.", ["red"]))
            64
            ```
        """
        payload = {
            "model": self.model,
            "task": task,
            "prompt": prompt,
            "candidate": candidate,
            "references": list(references),
            "rubric": RUBRIC_VERSION,
        }
        blob = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _session(self):
        if getattr(self._local, "session", None) is None:
            self._local.session = self._requests.Session()
        return self._local.session

    def _post(self, messages: list[dict]) -> str:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": self.max_tokens,
            **self.extra_body,
        }
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        exceptions = self._requests.exceptions
        try:
            response = self._session().post(self.url, json=body, headers=headers, timeout=self.timeout)
        except (exceptions.Timeout, exceptions.ConnectionError) as error:
            raise _RetryableError(f"{type(error).__name__}: {error}") from error
        if response.status_code == 429 or response.status_code >= 500:
            raise _RetryableError(f"HTTP {response.status_code}: {response.text[:200]}")
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise _RetryableError(f"Response is not a chat completion: {response.text[:200]!r}") from error
        return content or ""

    def _request_with_retries(self, messages: list[dict]) -> str:
        for attempt in range(self.max_retries + 1):
            try:
                return self._post(messages)
            except _RetryableError as error:
                if attempt == self.max_retries:
                    raise RuntimeError(f"{error} (gave up after {attempt + 1} attempts)") from error
                delay = min(self.backoff * 2**attempt, self.max_backoff)
                logger.warning("Judge request failed (%s); retrying in %.1f s", error, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def judge(
        self,
        task: str,
        prompt: str,
        candidate: str,
        references: str | Sequence[str],
        *,
        refresh: bool = False,
    ) -> Judgment:
        """Judge one candidate; never raises for server trouble, see `Judgment.error`.

        Args:
            task (`str`): "caption" or "qa".
            prompt (`str`): The prompt or question the evaluated model received.
            candidate (`str`): The evaluated model's output.
            references (`str` or `Sequence[str]`): Reference caption(s) or answer(s).
            refresh (`bool`, *optional*, defaults to False): Ask the server even when a cached
                judgment exists; the cached one is replaced only by a successful new judgment.

        Returns:
            [`Judgment`]: With `score` set, or with `error` set and `score=None`.

        Example:
            ```python
            judgment = judge.judge("caption", "Describe the video.", "A dog runs.", ["A dog runs on a beach."])
            print(judgment.score if judgment.ok else judgment.error)  # a score in [0, 1], or why it failed
            ```
        """
        refs = [references] if isinstance(references, str) else list(references)
        messages = build_judge_messages(task, prompt, candidate, refs)
        key = self.cache_key(task, prompt, candidate, refs)
        if self.cache is not None and not refresh:
            record = self.cache.get(key)
            if record is not None:
                return Judgment(
                    key=key,
                    score=rescale_score(int(record["raw_score"])),
                    raw_score=int(record["raw_score"]),
                    extracted_answer=record.get("extracted_answer"),
                    reason=record.get("reason"),
                    reply=record.get("reply"),
                    cached=True,
                )
        try:
            reply = self._request_with_retries(messages)
        except RuntimeError as error:
            return Judgment(key=key, error=str(error))
        try:
            parsed = parse_judge_reply(reply)
        except MalformedJudgeReply as error:
            return Judgment(key=key, reply=reply, error=f"malformed reply: {error}")
        judgment = Judgment(
            key=key,
            score=rescale_score(parsed["score"]),
            raw_score=parsed["score"],
            extracted_answer=parsed["extracted_answer"],
            reason=parsed["reason"],
            reply=reply,
        )
        if self.cache is not None:
            record = {
                k: v for k, v in asdict(judgment).items() if k not in {"key", "cached", "error", "score"}
            }
            record.update(model=self.model, task=task, rubric=RUBRIC_VERSION)
            self.cache.put(key, record)
        return judgment

    def judge_many(
        self,
        items: Sequence[dict],
        *,
        num_workers: int = 1,
        refresh: bool = False,
    ) -> list[Judgment]:
        """Judge several candidates, optionally with parallel requests.

        Args:
            items (`Sequence[dict]`): Each with keys `task`, `prompt`, `candidate`, `references`.
            num_workers (`int`, *optional*, defaults to 1): Concurrent requests.
            refresh (`bool`, *optional*, defaults to False): See [`~LLMJudge.judge`].

        Returns:
            `list[Judgment]`: In the order of `items`.

        Example:
            ```python
            items = [{"task": "qa", "prompt": "What color?", "candidate": c, "references": ["red"]}
                     for c in ("red", "blue")]
            scores = [j.score for j in judge.judge_many(items, num_workers=2)]  # None where judging failed
            ```
        """

        def run(item: dict) -> Judgment:
            return self.judge(
                item["task"], item["prompt"], item["candidate"], item["references"], refresh=refresh
            )

        if num_workers <= 1:
            return [run(item) for item in items]
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            return list(pool.map(run, items))
