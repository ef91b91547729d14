"""Plumbing shared by the Captum-backed adapters: the explained model as a module, seeding, layers."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.nn as nn

from mlflow_xai.attribution.methods.base import Attribution, AttributionContext, AttributionMethod, seeded
from mlflow_xai.errors import ModelError
from mlflow_xai.model.handle import ModelHandle


class ScoresModule(nn.Module):
    """``handle.scores`` as an ``nn.Module`` whose submodules are the user's model's modules.

    Captum's DeepLift and guided backprop hook every module of the module they are given, so the
    user's layers must be children here. The output transform is a module too (``nn.Softmax`` has a
    DeepLift rule of its own; a functional softmax would be differentiated through as a plain
    gradient).
    """

    def __init__(self, handle: ModelHandle) -> None:
        super().__init__()
        self.model = handle.module
        transforms = {"probability": nn.Softmax(dim=1), "log_probability": nn.LogSoftmax(dim=1)}
        self.transform = transforms.get(handle.output, nn.Identity())
        self._raw_scores = dataclasses.replace(handle, output="logit").scores  # validates outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(self._raw_scores(x))


@contextmanager
def quiet_captum() -> Iterator[None]:
    """Silence Captum's notices about what it does on purpose (we restore inputs and hooks)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks and attributes")
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
        warnings.filterwarnings("ignore", message="You are providing multiple inputs for Lime")
        yield


def find_layer(module: nn.Module, name: str, method: str) -> nn.Module:
    """The submodule called ``name`` (dotted path), or an error that lists valid names."""
    try:
        return module.get_submodule(name)
    except AttributeError:
        pass
    leaves = [n for n, m in module.named_modules() if n and not any(True for _ in m.children())]
    convs = [n for n, m in module.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
    shown = list(dict.fromkeys([*convs, *leaves]))[:12]
    more = ", ..." if len(set(convs) | set(leaves)) > len(shown) else ""
    raise ModelError(
        f"methods.{method}.layer {name!r} is not a module of the model; "
        f"valid names include: {', '.join(shown)}{more}"
    )


def require_relu_modules(module: nn.Module, method: str) -> None:
    """Guided backprop and deconvolution rewrite the backward pass of ``nn.ReLU`` modules only."""
    if not any(isinstance(m, nn.ReLU) for m in module.modules()):
        raise ModelError(
            f"method {method!r} overrides the gradient of nn.ReLU modules, and the model has none "
            "(a functional relu cannot be hooked); it would silently return plain gradients. "
            "Use nn.ReLU modules in the model or drop the method"
        )


def check_shape(values: torch.Tensor, x: torch.Tensor, method: str) -> torch.Tensor:
    if tuple(values.shape) != tuple(x.shape):
        raise ModelError(
            f"method {method!r} returned attributions of shape {list(values.shape)} for inputs of "
            f"shape {list(x.shape)}; check that its layer keeps the input's spatial axes"
        )
    return values


class CaptumGradientMethod(AttributionMethod):
    """An adapter around one Captum gradient attribution, which NoiseTunnel can also wrap.

    ``algorithm`` builds the Captum object and the keyword arguments of its ``attribute`` call;
    ``finish`` turns its output into attributions of the input's shape.
    """

    noise_tunnel_ready: ClassVar[bool] = True
    needs_gradients: ClassVar[bool] = True

    def algorithm(
        self, handle: ModelHandle, x: torch.Tensor, context: AttributionContext
    ) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    def finish(self, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return check_shape(values, x, self.name)

    def prepare(self, handle: ModelHandle) -> None:
        """Refuse a model this method cannot explain faithfully (called before any compute)."""

    def check_model(self, handle: ModelHandle) -> None:
        super().check_model(handle)
        self.prepare(handle)

    def _attribute(
        self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor, context: AttributionContext
    ) -> Attribution:
        self.prepare(handle)
        captum_method, kwargs = self.algorithm(handle, x, context)
        with quiet_captum():
            values = captum_method.attribute(x, target=target, **kwargs)
        return Attribution(self.finish(values, x).detach())


__all__ = [
    "CaptumGradientMethod",
    "ScoresModule",
    "check_shape",
    "find_layer",
    "quiet_captum",
    "require_relu_modules",
    "seeded",
]
