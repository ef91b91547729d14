"""Plain-language verdicts of the faithfulness checks, one per method result.

The area above a normalised deletion curve (1 - its area) measures how fast the output falls as
features go in the method's order; against the same area for random rankings it reads as "drops the
output 3.1x faster than random". Insertion reads the same way with the areas under the curves.
The randomisation check reads as pass or fail, with the layer through which the maps stayed alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from mlflow_xai.checks.randomisation import stayed_similar, verdict_stage
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


def randomisation_verdicts(
    metrics: Mapping[str, float],
    cascades: Mapping[str, np.ndarray],
    layers: Sequence[str],
    *,
    measure: str,
    max_similarity: float,
    depth: float,
) -> dict[str, tuple[str, str]]:
    """``{result key: (pass | fail, sentence)}`` of the model randomisation check, from the mean
    similarity at the verdict stage (``xai/<key>/randomisation_similarity_mean``) and each stage's
    mean over the samples (``cascades``: ``{key: (samples, stages)}``). A result with no finite
    similarity fails: nothing could be compared."""
    out = {}
    stage = verdict_stage(len(layers), depth)
    for key, cascade in cascades.items():
        mean = metrics.get(f"{METRIC_PREFIX}/{key}/randomisation_similarity_mean")
        by_stage = [
            float(np.mean(column[np.isfinite(column)])) if np.isfinite(column).any() else math.nan
            for column in cascade.T
        ]
        alike = stayed_similar(by_stage, max_similarity)
        top = f"the top {stage} of {len(layers)} layer stages (down to {layers[stage - 1]})"
        if mean is None or not math.isfinite(mean):
            out[key] = ("fail", f"no {measure} similarity could be computed after randomising {top}")
            continue
        verdict = "pass" if mean < max_similarity else "fail"
        change, sign = ("change", "<") if verdict == "pass" else ("barely change", ">=")
        sentence = (
            f"its maps {change}: {measure} similarity {mean:.2f} {sign} {max_similarity:g} "
            f"after randomising {top}"
        )
        if alike:
            sentence += f"; they stayed alike through layer {layers[alike - 1]} (stage {alike})"
        rise = metrics.get(f"{METRIC_PREFIX}/{key}/randomisation_entropy_rise_mean")
        if rise is not None and math.isfinite(rise):
            sentence += f"; entropy rise on the fully random model {rise:.2f}x"
        out[key] = (verdict, sentence)
    return out
