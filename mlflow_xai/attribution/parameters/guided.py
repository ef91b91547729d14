"""Parameters of Guided Backprop, Deconvolution, Guided GradCAM and Layer GradCAM.
"""

from __future__ import annotations

from pydantic import (
    Field,
)

from mlflow_xai.attribution.parameters.common import InterpolateMode, LayerName, _NeedsLayer
from mlflow_xai.strict import _Strict


class GuidedBackpropConfig(_Strict):
    """Guided backpropagation; it takes no parameters (it needs nn.ReLU modules)."""


class DeconvolutionConfig(_Strict):
    """Deconvolution; it takes no parameters (it needs nn.ReLU modules)."""


class GuidedGradCamConfig(_NeedsLayer):
    layer: LayerName
    interpolate_mode: InterpolateMode = Field(
        default="nearest", description="how the layer's map is resized to the input (Captum's default)"
    )
    attribute_to_layer_input: bool = Field(
        default=False, description="GradCAM on the layer's input instead of its output"
    )


class LayerGradCamConfig(_NeedsLayer):
    """GradCAM on one layer, resized to the input's spatial size and repeated over its channels."""

    layer: LayerName
    relu_attributions: bool = Field(
        default=True, description="keep only positive evidence, as in the GradCAM paper"
    )
    attribute_to_layer_input: bool = Field(
        default=False, description="GradCAM on the layer's input instead of its output"
    )
    interpolate_mode: InterpolateMode = Field(
        default="bilinear", description="how the layer's map is resized to the input"
    )
