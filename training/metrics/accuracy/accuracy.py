"""Top-1 accuracy, a self-contained `evaluate` module loaded by path:
`evaluate.load("training/metrics/accuracy")`.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Top-1 accuracy: the fraction of predictions equal to the reference label. Kept in the repository
(rather than loaded from the Hub) so evaluation runs offline and cannot change under us.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels.
    references (`list` of `int`): true labels.
Returns:
    accuracy (`float` in [0, 1]; NaN for no examples).
Examples:
    >>> accuracy = evaluate.load("training/metrics/accuracy")
    >>> accuracy.compute(predictions=[0, 1, 1], references=[0, 1, 0])["accuracy"]
    0.6666666666666666
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    """Top-1 accuracy."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            format="numpy",
        )

    def _compute(self, predictions, references):
        predictions, references = np.asarray(predictions), np.asarray(references)
        if len(references) == 0:
            return {"accuracy": float("nan")}
        return {"accuracy": float((predictions == references).mean())}
