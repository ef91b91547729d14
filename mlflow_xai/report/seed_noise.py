"""How much an audit's metrics move when only its seeds change.

Random rankings, perturbations, baselines drawn from distributions and randomised weights all come
from seeds. ``gate.seed_runs: 2`` runs the same audit again with every seed shifted; the spread of
a metric (largest minus smallest value over the runs) is the noise a threshold on it has to clear:
a level closer to the metric than that could pass under one seed and fail under another.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: Metrics that are not results of random draws: timings and counts.
_NOT_NOISE = ("seconds", "/samples")


def metric_spread(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Largest minus smallest value of every metric over ``runs``, for the metrics every run has as
    finite numbers (timings and sample counts left out)."""
    if len(runs) < 2:
        return {}
    out = {}
    for name in runs[0]:
        if name.endswith(_NOT_NOISE):
            continue
        values = [run.get(name) for run in runs]
        if all(v is not None and math.isfinite(v) for v in values):
            out[name] = max(values) - min(values)
    return out


#: Quantities that come from seeded draws whatever the method: the random controls, and the checks
#: that perturb or randomise (each check's config has a ``seed``).
SEEDED_QUANTITIES = (
    "deletion_random_auc",
    "insertion_random_auc",
    "deletion_margin",
    "insertion_margin",
    "infidelity",
    "sensitivity_max",
    "randomisation_",
    "comprehensiveness_random",
    "sufficiency_random",
    "comprehensiveness_margin",
    "sufficiency_margin",
)


def seeded_thresholds(config: Any) -> list[str]:
    """The gate thresholds whose metric moves with the seeds: a method that draws at random (its
    config has a ``seed``) or a quantity from seeded draws (``SEEDED_QUANTITIES``)."""
    enabled = config.methods.enabled()
    out = []
    for name in config.gate.thresholds:
        parts = name.split("/")
        if len(parts) < 3:
            continue
        method, quantity = parts[1], parts[-1]
        random_method = method in enabled and "seed" in type(enabled[method]).model_fields
        if random_method or quantity.startswith(SEEDED_QUANTITIES):
            out.append(name)
    return out
