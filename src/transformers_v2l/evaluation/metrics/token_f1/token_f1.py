"""Token F1 as an `evaluate` metric that loads offline: `evaluate.load("<this folder>")`.

The scoring itself lives in `transformers_v2l.evaluation.metrics`; this module only wraps it in
the `evaluate.Metric` interface so that it composes with `evaluate.combine` and friends.
"""

import datasets
import evaluate

from transformers_v2l.evaluation.metrics import exact_match_score, token_f1_prf

_DESCRIPTION = """
SQuAD-style token F1 between a generated text and one or more references: lowercase, strip
punctuation and the articles a/an/the, split on whitespace, and compare bags of tokens. With
several references an example takes the maximum. This is the token F1 of the Video2LoRA paper.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): one generated text per example.
    references (`list[str]` or `list[list[str]]`): the reference(s) of each example.

Returns:
    token_f1 (`float`): mean per-example F1 (max over references).
    precision (`float`): mean precision of the best-F1 reference.
    recall (`float`): mean recall of the best-F1 reference.
    exact_match (`float`): mean normalized exact match against any reference.
    per_example_f1 (`list[float]`): the F1 of each example, for paired statistics.

Example:
    >>> metric = evaluate.load("path/to/token_f1")
    >>> metric.compute(predictions=["the cat sat"], references=[["a cat sat down"]])["token_f1"]
    0.8
"""

_CITATION = """
@inproceedings{rajpurkar2016squad,
  title={SQuAD: 100,000+ Questions for Machine Comprehension of Text},
  author={Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy},
  booktitle={EMNLP},
  year={2016}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TokenF1(evaluate.Metric):
    """SQuAD-style bag-of-tokens F1, max over references."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
                ),
            ],
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references):
        f1s, precisions, recalls, matches = [], [], [], []
        for prediction, refs in zip(predictions, references):
            refs = [refs] if isinstance(refs, str) else list(refs)
            best = max((token_f1_prf(prediction, ref) for ref in refs), key=lambda prf: prf[2])
            precisions.append(best[0])
            recalls.append(best[1])
            f1s.append(best[2])
            matches.append(exact_match_score(prediction, refs))
        count = max(len(f1s), 1)
        return {
            "token_f1": sum(f1s) / count,
            "precision": sum(precisions) / count,
            "recall": sum(recalls) / count,
            "exact_match": sum(matches) / count,
            "per_example_f1": f1s,
        }
