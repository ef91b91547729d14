"""What each sample is explained for: ``target`` and the names of its slots.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
)

from mlflow_xai.strict import PositiveInt, _Strict

#: One target: the predicted class, the label, or a fixed class index of the model.
Target = Literal["predicted", "label"] | Annotated[int, Field(ge=0)]


class TopTargets(_Strict):
    """``target: {top: k}``: the k classes the model scores highest, per sample (top1 = predicted)."""

    top: PositiveInt


def target_entries(target: Target | list[Target] | TopTargets) -> list[Target]:
    """The listed targets (``predicted``, ``label``, class indices) as a list; none for ``top: k``."""
    if isinstance(target, TopTargets):
        return []
    return target if isinstance(target, list) else [target]


def target_slots(target: Target | list[Target] | TopTargets) -> list[str]:
    """The names of an audit's targets, as metrics and folders name them: ``predicted``, ``label``,
    ``class_208``, ``top1`` .. ``topk``. One target gives one slot; with several, every method's
    metrics and masks are kept per slot (``xai/<method>/<slot>/...``)."""
    if isinstance(target, TopTargets):
        return [f"top{rank}" for rank in range(1, target.top + 1)]
    return [entry if isinstance(entry, str) else f"class_{entry}" for entry in target_entries(target)]
