"""How much an audit's metrics move when only its seeds change.

Random rankings, perturbations, baselines drawn from distributions and randomised weights all come
from seeds. ``gate.seed_runs: 2`` runs the same audit again with every seed shifted; the spread of
a metric (largest minus smallest value over the runs) is the noise a threshold on it has to clear:
a level closer to the metric than that could pass under one seed and fail under another.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

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
