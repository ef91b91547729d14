"""The strict pydantic base every configuration model derives from, and its shared field types.

Imports nothing of the package: the config schema and the attribution methods' parameter models
both build on it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def keys_of_kind(data: Any, own: set[str]) -> Any:
    """A dumped kind-keyed section keeps only ``kind`` and the keys that kind takes, so that the
    dumped config loads again (a key of another kind is an error on load)."""
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if k == "kind" or k in own}
    return data


def brief(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut short: a refusal quotes the value, not a whole file."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
