"""From a chat request to the engine's prompt and adapter, following the checkpoint's answering protocol.

`hn.answer` applies the protocol saved with the checkpoint's processor, and so does the server:

* `"direct"`: the conversation is the prompt, answered with the video's adapter.
* `"recall"`: the adapter first recalls a description of the video (`recall_prompt`, greedy, at most
  `recall_max_new_tokens`); the conversation then follows that exchange as the next turns, read by
  the frozen model (`reader: "frozen"`) or with the adapter (`reader: "adapter"`). The description
  depends only on the video, so it is generated once per video (right after internalization), kept
  in the job record (`description`) and reused by every question.

The base model's name as `model` always answers the conversation as it is, with no adapter.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from . import model_access
from .engine import EngineRequest, ServingEngine
from .errors import ServingError
from .sampling import SamplingParams

__all__ = ["AnswerPlan", "AnswerPlanner"]


@dataclass
class AnswerPlan:
    """What the engine runs for one chat request.

    Args:
        prompt_ids: the prompt's token ids.
        adapter: the adapter of the batch row, or `None` for the base model.

    Example:
        ```python
        plan = planner.plan(messages, adapter, description)
        ```
    """

    prompt_ids: list[int]
    adapter: object | None


class AnswerPlanner:
    """Builds prompts by the checkpoint's protocol and generates (once per video) the recalled descriptions.

    Args:
        hn: the `Video2LoraHypernetwork`.
        engine: the running `ServingEngine` that generates the descriptions.
        store: the `VideoStore` where descriptions are kept.

    Example:
        ```python
        planner = AnswerPlanner(hn, engine, store)
        plan = planner.plan([{"role": "user", "content": "What color is the car?"}], adapter, description)
        ```
    """

    def __init__(self, hn, engine: ServingEngine, store):
        self.hn, self.engine, self.store = hn, engine, store
        self.protocol = model_access.answer_protocol(hn)
        self._lock = threading.Lock()
        self._descriptions: dict[str, str] = {}

    @property
    def recalls(self) -> bool:
        """Whether the checkpoint answers after recalling a description."""
        return self.protocol.get("protocol") == "recall"

    def plan(self, messages: list[dict], adapter, description: str | None) -> AnswerPlan:
        """The prompt and row adapter for a conversation.

        Args:
            messages: the conversation (`[{"role", "content"}]`).
            adapter: the video's adapter, or `None` for the base model.
            description: the video's recalled description (needed by the recall protocol).

        Returns:
            The `AnswerPlan`.

        Example:
            ```python
            planner.plan([{"role": "user", "content": "Describe the video."}], adapter, None)
            ```
        """
        if adapter is None or not self.recalls:
            return AnswerPlan(model_access.prompt_ids(self.hn, messages), adapter)
        recall_prompt = self.protocol["recall_prompt"]
        if messages == [{"role": "user", "content": recall_prompt}]:  # the recall itself, from the adapter
            return AnswerPlan(model_access.prompt_ids(self.hn, messages), adapter)
        conversation = [{"role": "user", "content": recall_prompt}, {"role": "assistant", "content": description},
                        *messages]  # fmt: skip
        reader = adapter if self.protocol.get("reader") == "adapter" else None
        return AnswerPlan(model_access.prompt_ids(self.hn, conversation), reader)

    def describe(self, video: str, adapter, timeout: float = 300.0) -> str | None:
        """The video's recalled description: cached, stored, or generated now by the engine (blocking).

        Args:
            video: the video id.
            adapter: its adapter.
            timeout: seconds to wait for the engine.

        Returns:
            The description, or `None` when the checkpoint does not recall.

        Raises:
            ServingError: the engine failed or timed out.

        Example:
            ```python
            planner.describe(video, adapter)
            ```
        """
        if not self.recalls:
            return None
        with self._lock:
            if video in self._descriptions:
                return self._descriptions[video]
        record = self.store.get(video)
        text = record.get("description")
        if text is None:
            text = self._generate_description(adapter, timeout)
            self.store.update(video, description=text)
        with self._lock:
            self._descriptions[video] = text
        return text

    async def describe_async(self, video: str, adapter) -> str | None:
        """`describe` without blocking the event loop.

        Args:
            video: the video id.
            adapter: its adapter.

        Returns:
            The description, or `None` when the checkpoint does not recall.

        Example:
            ```python
            description = await planner.describe_async(video, adapter)
            ```
        """
        if not self.recalls:
            return None
        with self._lock:
            if video in self._descriptions:
                return self._descriptions[video]
        return await asyncio.to_thread(self.describe, video, adapter)

    def forget(self, video: str) -> None:
        """Drop a deleted video's description.

        Args:
            video: the video id.

        Example:
            ```python
            planner.forget(video)
            ```
        """
        with self._lock:
            self._descriptions.pop(video, None)

    def _generate_description(self, adapter, timeout: float) -> str:
        done, parts, final = threading.Event(), [], {}

        def on_event(event) -> None:
            parts.append(event.text)
            if event.finish_reason:
                final["event"] = event
                done.set()

        ids = model_access.prompt_ids(self.hn, [{"role": "user", "content": self.protocol["recall_prompt"]}])
        params = SamplingParams(max_tokens=int(self.protocol["recall_max_new_tokens"]), temperature=0)
        request = EngineRequest(ids, adapter, params, on_event=on_event)
        self.engine.submit(request)
        if not done.wait(timeout):
            self.engine.cancel(request)
            raise ServingError(f"Recalling the video's description took more than {timeout:g} s.")
        if final["event"].finish_reason == "error":
            raise ServingError(f"Recalling the video's description failed: {final['event'].error}")
        return "".join(parts).strip()
