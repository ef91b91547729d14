"""Plain-language verdicts of the deletion and insertion check, one per method result.

The area above a normalised deletion curve (1 - its area) measures how fast the output falls as
features go in the method's order; against the same area for random rankings it reads as "drops the
output 3.1x faster than random". Insertion reads the same way with the areas under the curves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mlflow_xai.report.metric_names import METRIC_PREFIX

#: The means a sentence is made of, in the order it reads them.
_MEANS = ("deletion_auc_mean", "deletion_random_auc_mean", "insertion_auc_mean", "insertion_random_auc_mean")


def _faster(ours: float, random: float) -> str:
    if ours > 0 and random > 0 and ours > random:
        return f"{ours / random:.1f}x faster than a random order"
    return "no faster than a random order"


def faithfulness_sentences(metrics: Mapping[str, float], keys: Iterable[str]) -> dict[str, str]:
    """``{result key: sentence}`` for every result whose deletion and insertion means are in
    ``metrics`` (``xai/<key>/deletion_auc_mean``, ...); others are left out."""
    out = {}
    for key in keys:
        prefix = f"{METRIC_PREFIX}/{key}/"
        values = [metrics.get(prefix + name) for name in _MEANS]
        if any(value is None for value in values):
            continue
        deletion, deletion_random, insertion, insertion_random = values
        out[key] = (
            f"deleting features in this order drops the output {_faster(1 - deletion, 1 - deletion_random)} "
            f"(area above the curve {1 - deletion:.2f} against {1 - deletion_random:.2f}); inserting them "
            f"raises it {_faster(insertion, insertion_random)} (area {insertion:.2f} against "
            f"{insertion_random:.2f})"
        )
    return out
