"""Per-request token choice and text: sampling with OpenAI's parameters, incremental detokenization, stop strings.

`SamplingParams` holds what one request asked for (`temperature`, `top_p`, `seed`, `max_tokens`, `stop`);
`sample_rows` picks one token per batch row, each row with its own parameters and random generator;
`TextStream` turns a row's token ids into text deltas, holding back a partial UTF-8 character or the
beginning of a stop string until it is certain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["SamplingParams", "TextStream", "sample_rows"]


@dataclass
class SamplingParams:
    """What one request asked for, as in OpenAI's chat completions API.

    Args:
        max_tokens: generation budget (tokens).
        temperature: 0 is greedy; otherwise logits are divided by it before sampling.
        top_p: nucleus sampling: sample from the smallest set of tokens whose probability reaches `top_p`.
        seed: seed of this request's random generator (`None`: a random seed).
        stop: up to 4 strings; the answer ends before the first one generated.
        ignore_eos: keep generating after the end-of-sequence token (for benchmarks, as in vLLM).

    Example:
        ```python
        params = SamplingParams(max_tokens=32, temperature=0.7, top_p=0.9, seed=1, stop=["\\n"])
        ```
    """

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False

    def make_generator(self) -> torch.Generator | None:
        """The request's random generator (`None` for greedy decoding).

        Returns:
            A CPU `torch.Generator` seeded with `seed` (or randomly), or `None` when `temperature` is 0.

        Example:
            ```python
            SamplingParams(temperature=1.0, seed=3).make_generator().initial_seed()  # 3
            ```
        """
        if self.temperature == 0:
            return None
        generator = torch.Generator()
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(self.seed) & 0xFFFF_FFFF_FFFF_FFFF)
        return generator


def sample_rows(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
) -> list[int]:
    """Pick the next token of every row: greedy rows by argmax, the others by temperature and top-p sampling.

    Args:
        logits: `[B, V]` float32 logits of the last position.
        params: one `SamplingParams` per row.
        generators: one generator per row (`None` for greedy rows).

    Returns:
        `B` token ids.

    Example:
        ```python
        sample_rows(torch.randn(2, 10), [SamplingParams(temperature=0), SamplingParams(seed=0)],
                    [None, SamplingParams(seed=0).make_generator()])
        ```
    """
    chosen = logits.argmax(-1).tolist()  # [B]
    for row, (param, generator) in enumerate(zip(params, generators)):
        if param.temperature == 0 or generator is None:
            continue
        probs = torch.softmax(logits[row] / param.temperature, dim=-1)  # [V]
        if param.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            before = sorted_probs.cumsum(0) - sorted_probs  # mass of the tokens ranked above each
            sorted_probs[before >= param.top_p] = 0.0  # keeps at least the most likely token
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        chosen[row] = int(torch.multinomial(probs, 1, generator=generator))
    return chosen


class TextStream:
    """Turn one answer's token ids into text deltas, stopping at stop strings.

    Decoding is incremental (a window of the last few tokens is decoded, not the whole answer), a
    trailing partial UTF-8 character is held back, and so is any tail that could be the start of a
    stop string.

    Args:
        tokenizer: the base model's tokenizer.
        stop: the stop strings.

    Example:
        ```python
        stream = TextStream(tokenizer, stop=["."])
        for token in token_ids:
            delta, stopped = stream.add(token)
        tail = stream.finish()
        ```
    """

    def __init__(self, tokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.tokens: list[int] = []
        self.prefix_offset = 0  # tokens before this one are decoded and settled
        self.read_offset = 0  # text of tokens[prefix_offset:read_offset] has been taken into `text`
        self.text = ""  # the answer so far (settled part)
        self.sent = 0  # characters of `text` handed out
        self.stopped = False

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def add(self, token: int) -> tuple[str, bool]:
        """Append a token; return the text that can be sent now and whether a stop string was reached.

        Args:
            token: the new token id.

        Returns:
            `(delta, stopped)`. After `stopped`, the answer ends: the stop string and anything after it
            are never sent.

        Example:
            ```python
            delta, stopped = stream.add(42)
            ```
        """
        self.tokens.append(token)
        before = self._decode(self.tokens[self.prefix_offset : self.read_offset])
        after = self._decode(self.tokens[self.prefix_offset :])
        if after.endswith("\ufffd") or len(after) <= len(before):  # a partial character: wait for more
            return self._release(final=False)
        self.text += after[len(before) :]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
        return self._release(final=False)

    def finish(self) -> str:
        """The rest of the answer when generation ends (end of sequence or token budget).

        Returns:
            Text not sent yet (a held-back partial stop string, a final partial character).

        Example:
            ```python
            tail = stream.finish()
            ```
        """
        if not self.stopped and self.read_offset < len(self.tokens):
            before = self._decode(self.tokens[self.prefix_offset : self.read_offset])
            after = self._decode(self.tokens[self.prefix_offset :])
            self.text += after[len(before) :]
            self.read_offset = len(self.tokens)
        delta, _ = self._release(final=True)
        return delta

    def _release(self, final: bool) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        for stop in self.stop:
            start = max(0, self.sent - len(stop) + 1)
            index = self.text.find(stop, start)
            if index >= 0:
                self.text = self.text[:index]
                self.stopped = True
                break
        end = len(self.text)
        if not final and not self.stopped:
            end -= self._held_back()
        delta = self.text[self.sent : end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return delta, self.stopped

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        longest = 0
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
