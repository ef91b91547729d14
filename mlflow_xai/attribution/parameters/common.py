"""What several methods' parameters share: the baseline, feature masks, layer names.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    model_serializer,
    model_validator,
)

from mlflow_xai.strict import NonNegativeFloat, PositiveInt, _Strict, keys_of_kind


class BaselineConfig(_Strict):
    """The reference input x'. It lives in the model's input space (after any preprocessing).

    ``baseline: zeros`` is shorthand for ``baseline: {kind: zeros}``. Each kind takes only its own
    keys: ``constant`` a ``value``, ``blur`` a ``sigma``, ``uniform`` ``low``/``high``/``seed``,
    ``file`` a ``path`` to a ``.npy`` array of one input's shape; ``probe_mean`` (the mean input of
    the probe set) and ``zeros`` take none.
    """

    kind: Literal["zeros", "constant", "blur", "uniform", "probe_mean", "file"] = "zeros"
    value: float = Field(default=0.0, description="the fill value of a constant baseline")
    sigma: Annotated[float, Field(gt=0.0)] = Field(
        default=2.0, description="standard deviation in pixels of a blur baseline's Gaussian"
    )
    low: float = Field(default=0.0, description="lower bound of a uniform-noise baseline")
    high: float = Field(default=1.0, description="upper bound of a uniform-noise baseline")
    seed: int = Field(default=0, description="seed of a uniform-noise baseline")
    path: str | None = Field(default=None, description="a .npy file holding one input (file kind)")

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, data: Any) -> Any:
        # `baseline: zeros` is shorthand for `baseline: {kind: zeros}`.
        if isinstance(data, str):
            return {"kind": data}
        return data

    @model_serializer(mode="wrap")
    def _only_keys_of_kind(self, handler: Any) -> Any:
        return keys_of_kind(handler(self), _BASELINE_KEYS[self.kind])

    @model_validator(mode="after")
    def _keys_of_kind(self) -> BaselineConfig:
        own = _BASELINE_KEYS[self.kind]
        foreign = sorted(self.model_fields_set - own - {"kind"})
        if foreign:
            allowed = ", ".join(sorted(own)) or "no other key"
            verb = "does" if len(foreign) == 1 else "do"
            raise ValueError(
                f"{', '.join(foreign)} {verb} not apply to baseline kind {self.kind!r}, which takes {allowed}"
            )
        if self.kind == "uniform" and not self.low < self.high:
            raise ValueError(f"low must be < high for a uniform baseline, got {self.low} and {self.high}")
        if self.kind == "file" and (self.path is None or not self.path.endswith(".npy")):
            raise ValueError(f"baseline kind 'file' needs a path to a .npy file, got {self.path!r}")
        return self


_BASELINE_KEYS: dict[str, set[str]] = {
    "zeros": set(),
    "constant": {"value"},
    "blur": {"sigma"},
    "uniform": {"low", "high", "seed"},
    "probe_mean": set(),
    "file": {"path"},
}

PositiveFloat = Annotated[float, Field(gt=0.0)]
LayerName = Annotated[str, Field(min_length=1, description="dotted module name, e.g. features.conv3")]
InterpolateMode = Literal["nearest", "linear", "bilinear", "bicubic", "trilinear", "area"]

_SEED = "seed of torch's random generator, set right before each call (same seed, same result)"
_PER_EVAL = "perturbed copies evaluated in one forward pass"


class _NeedsLayer(_Strict):
    @model_validator(mode="before")
    @classmethod
    def _layer_given(cls, data: Any) -> Any:
        if isinstance(data, dict) and "layer" not in data:
            raise ValueError("layer is required: the dotted name of a module, e.g. features.conv3")
        return data


_FEATURE_MASK_KEYS = {"grid": {"patch_size"}, "superpixel": {"n_segments", "compactness", "iterations"}}


class FeatureMaskConfig(_Strict):
    """Groups of input features perturbed together: square patches or superpixels.

    ``grid`` cuts the spatial axes into ``patch_size`` squares. ``superpixel`` runs k-means on colour
    and position (``n_segments`` centres on a grid; ``compactness`` weighs position against colour).
    Every channel of a pixel belongs to the same group.
    """

    kind: Literal["grid", "superpixel"] = "grid"
    patch_size: PositiveInt = Field(default=4, description="grid: side of a square patch in pixels")
    n_segments: PositiveInt = Field(default=16, description="superpixel: number of k-means centres")
    compactness: NonNegativeFloat = Field(
        default=1.0, description="superpixel: weight of position relative to colour"
    )
    iterations: PositiveInt = Field(default=10, description="superpixel: k-means iterations")

    @model_serializer(mode="wrap")
    def _only_keys_of_kind(self, handler: Any) -> Any:
        return keys_of_kind(handler(self), _FEATURE_MASK_KEYS[self.kind])

    @model_validator(mode="after")
    def _keys_of_kind(self) -> FeatureMaskConfig:
        own = _FEATURE_MASK_KEYS[self.kind]
        foreign = sorted(self.model_fields_set - own - {"kind"})
        if foreign:
            raise ValueError(
                f"{', '.join(foreign)} not used by feature mask kind {self.kind!r}, "
                f"which takes {', '.join(sorted(own))}"
            )
        return self
