"""The prompts given to both conditions, in one table.

The paper's appendix B (its exact evaluation prompts) is missing from our copy of the paper, so
these are ours, written in the paper's spirit: one instruction per benchmark and caption style,
and one open-ended template for question answering (no answer options are shown). Both the base
model (video in context) and Video2LoRA receive exactly the same prompt.
"""

from __future__ import annotations

__all__ = ["PROMPT_TEMPLATES", "QA_TEMPLATE"]

QA_TEMPLATE = "Question: {question}\nAnswer the question about the video in a few words."

#: Every prompt the readers use, keyed by (benchmark, subset). QA prompts format `{question}`.
PROMPT_TEMPLATES: dict[tuple[str, str], str] = {
    (
        "activitynet_captions",
        "default",
    ): "Describe in detail the events that happen in this video, in the order they happen.",
    ("activitynet_captions", "segment"): "Describe what happens in this video clip in one sentence.",
    ("plm_rcap", "default"): "Give a detailed description of what the main subject does in this video clip.",
    (
        "plm_rdcap",
        "default",
    ): "Describe, in temporal order, each action of the main subject in this video, one per line.",
    ("vdc", "short"): "Write a one-sentence summary of the video.",
    ("vdc", "detailed"): "Describe this video in detail, in more than three sentences.",
    (
        "vdc",
        "camera",
    ): "Describe the camera work in this video: shot types, angles, camera movements and transitions.",
    (
        "vdc",
        "background",
    ): "Describe the background of this video: the location, objects, weather and time of day.",
    (
        "vdc",
        "main_object",
    ): "Describe the main subject of this video: its attributes, actions, position and movements.",
    ("carebench", "caption"): "Describe this video in detail.",
    ("carebench", "events"): "List the events that happen in this video, in the order they happen.",
    (
        "carebench",
        "objects",
    ): "List the people and objects that appear in this video and describe their appearance.",
    (
        "carebench",
        "spatial_caption",
    ): "Describe the scene of this video: the setting, the people and objects, their appearance and positions.",
    (
        "carebench",
        "temporal_caption",
    ): "Describe the actions and movements in this video, in the order they happen.",
    ("nextqa", "default"): QA_TEMPLATE,
    ("activitynet_qa", "default"): QA_TEMPLATE,
    ("plm_sgqa", "default"): QA_TEMPLATE,
    ("vidcapbench", "default"): QA_TEMPLATE,
}
