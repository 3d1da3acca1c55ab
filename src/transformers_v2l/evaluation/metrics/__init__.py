"""Reference-based text metrics: token F1 and exact match, as the Video2LoRA paper uses them.

Token F1 follows the SQuAD evaluation script, which is what "token-level F1 between the generated
output and the reference" (paper, section 4.3) means in practice:

1. lowercase;
2. remove ASCII punctuation (`string.punctuation`);
3. remove the articles "a", "an" and "the" (whole words);
4. collapse whitespace and split on it.

The prediction and the reference are then compared as *bags* of tokens: the overlap is the
multiset intersection, precision is overlap / prediction tokens, recall is overlap / reference
tokens, and F1 is their harmonic mean. With several references, an example scores the maximum
over references. When either side normalizes to no tokens at all, the score is 1.0 if both are
empty and 0.0 otherwise (SQuAD v2 convention).

The same functions back the local `evaluate` metric in `metrics/token_f1/token_f1.py`, which
loads offline with `evaluate.load(token_f1_metric_path())`.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "exact_match_score",
    "mean_token_f1",
    "normalize_answer",
    "normalize_tokens",
    "token_f1_metric_path",
    "token_f1_prf",
    "token_f1_score",
]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Normalize a string the way the SQuAD evaluation script does.

    Args:
        text (`str`): Any generated or reference text.

    Returns:
        `str`: Lowercased text without punctuation and articles, with single spaces.

    Example:
        ```python
        >>> normalize_answer("The  Cat, sat!")
        'cat sat'
        ```
    """
    text = text.lower().translate(_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def normalize_tokens(text: str) -> list[str]:
    """Split `normalize_answer(text)` on whitespace.

    Args:
        text (`str`): Any generated or reference text.

    Returns:
        `list[str]`: The normalized tokens, in order.

    Example:
        ```python
        >>> normalize_tokens("The Red car!")
        ['red', 'car']
        ```
    """
    return normalize_answer(text).split()


def token_f1_prf(prediction: str, reference: str) -> tuple[float, float, float]:
    """Bag-of-tokens precision, recall and F1 of one prediction against one reference.

    Args:
        prediction (`str`): The generated text.
        reference (`str`): One reference text.

    Returns:
        `tuple[float, float, float]`: `(precision, recall, f1)`, each in [0, 1].

    Example:
        ```python
        >>> token_f1_prf("a dog runs fast", "the dog runs")
        (0.6666666666666666, 1.0, 0.8)
        ```
    """
    pred_tokens = normalize_tokens(prediction)
    ref_tokens = normalize_tokens(reference)
    if not pred_tokens or not ref_tokens:
        same = float(pred_tokens == ref_tokens)
        return same, same, same
    overlap = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if overlap == 0:
        return 0.0, 0.0, 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(ref_tokens)
    return precision, recall, 2 * precision * recall / (precision + recall)


def _as_references(references: str | Sequence[str]) -> list[str]:
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("`references` is empty: give at least one reference text.")
    return refs


def token_f1_score(prediction: str, references: str | Sequence[str]) -> float:
    """Token F1 of a prediction: the maximum over its references.

    Args:
        prediction (`str`): The generated text.
        references (`str` or `Sequence[str]`): One reference or several acceptable references.

    Returns:
        `float`: The best F1 in [0, 1].

    Example:
        ```python
        >>> token_f1_score("a man plays guitar", ["a woman sings", "man playing a guitar"])
        0.6666666666666666
        ```
    """
    return max(token_f1_prf(prediction, ref)[2] for ref in _as_references(references))


def exact_match_score(prediction: str, references: str | Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized reference, else 0.0.

    Args:
        prediction (`str`): The generated text.
        references (`str` or `Sequence[str]`): One or several references.

    Returns:
        `float`: 1.0 or 0.0.

    Example:
        ```python
        >>> exact_match_score("The red car.", ["red car", "a blue car"])
        1.0
        ```
    """
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(ref) for ref in _as_references(references)))


def mean_token_f1(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Mean per-example token F1 over a corpus.

    Args:
        predictions (`Sequence[str]`): One generated text per example.
        references (`Sequence[str | Sequence[str]]`): The reference(s) of each example.

    Returns:
        `float`: The mean of `token_f1_score` over examples.

    Example:
        ```python
        >>> round(mean_token_f1(["a red car", "blue"], [["red car"], "a blue bike"]), 4)
        0.8333
        ```
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"`predictions` has {len(predictions)} items but `references` has {len(references)}; "
            "give one list of references per prediction."
        )
    if not predictions:
        raise ValueError("`predictions` is empty.")
    return sum(token_f1_score(p, r) for p, r in zip(predictions, references)) / len(predictions)


def token_f1_metric_path() -> str:
    """Path of the local `evaluate` metric module, for `evaluate.load(...)` without the Hub.

    Returns:
        `str`: The folder that holds `token_f1.py`.

    Example:
        ```python
        >>> import evaluate
        >>> metric = evaluate.load(token_f1_metric_path())
        >>> metric.compute(predictions=["the cat sat"], references=[["a cat sat down"]])["token_f1"]
        0.8
        ```
    """
    return str(Path(__file__).resolve().parent / "token_f1")
