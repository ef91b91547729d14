"""Baselines: the reference inputs x' that path and perturbation methods compare an input against.

A baseline lives in the model's input space, that is *after* any preprocessing the model expects
(normalisation, resizing): a "zeros" baseline of a model fed standardised images is the mean image,
not a black one. Every function here returns a tensor on the input's device and dtype.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mlflow_xai.attribution.parameters import BaselineConfig
from mlflow_xai.errors import ConfigError, ProbeError
from mlflow_xai.seeding import sample_generator


def make_baseline(
    config: BaselineConfig,
    x: torch.Tensor,
    *,
    probe_mean: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """One baseline per sample of the batch ``x``: a tensor of ``x``'s shape, device and dtype.

    ``probe_mean`` (one input's shape, or broadcastable to it) is the mean input of the probe set;
    only the ``probe_mean`` kind uses it, and that kind cannot be built without it. ``positions``
    are the samples' indices in the probe set (default 0, 1, ...): a ``uniform`` baseline is drawn
    per sample from (seed, position), so it does not depend on how the probe set is batched.
    """
    kind = config.kind
    if kind == "zeros":
        return torch.zeros_like(x)
    if kind == "constant":
        return torch.full_like(x, config.value)
    if kind == "blur":
        return gaussian_blur(x, config.sigma)
    if kind == "uniform":
        positions = torch.arange(len(x)) if positions is None else positions
        if len(positions) != len(x):
            raise ValueError(f"{len(positions)} positions for a batch of {len(x)} samples")
        shape = tuple(x.shape[1:])
        draws = [uniform_noise(shape, config.low, config.high, config.seed, int(p)) for p in positions]
        return torch.stack(draws).to(x)
    if kind == "probe_mean":
        if probe_mean is None:
            raise ConfigError(
                "baseline kind 'probe_mean' needs the probe set's mean input, which was not given; "
                "pass probe_mean= or choose another kind (zeros, constant, blur, uniform, file)"
            )
        return _broadcast_one(torch.as_tensor(probe_mean), x, "the probe mean")
    if kind == "file":
        return _broadcast_one(torch.tensor(load_baseline_file(config.path)), x, repr(config.path))
    raise ConfigError(f"unknown baseline kind {kind!r}")  # unreachable: the config validates kind


def make_baseline_distribution(
    config: BaselineConfig,
    x: torch.Tensor,
    n: int,
    *,
    probe_mean: torch.Tensor | None = None,
    position: int = 0,
) -> torch.Tensor:
    """The baseline distribution of the sample at ``position``: shape ``(m, *x.shape[1:])``.

    Sampling methods (GradientShap, DeepLiftShap) draw from a set of baselines. The ``uniform``
    kind gives ``n`` independent draws, seeded by (seed, position); the deterministic kinds give
    one baseline. ``blur`` depends on each input and is not a distribution: it is refused.
    """
    if config.kind == "blur":
        raise ConfigError(
            "baseline kind 'blur' depends on each input, but this method draws its baselines from "
            "a distribution; use zeros, constant, uniform, probe_mean or file"
        )
    if config.kind == "uniform":
        shape = (n, *x.shape[1:])
        return uniform_noise(shape, config.low, config.high, config.seed, position).to(x)
    return make_baseline(config, x[:1], probe_mean=probe_mean)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur every channel of ``x`` (batch, channels, *spatial) over its spatial axes.

    A separable Gaussian kernel of radius ceil(3 sigma); borders repeat the edge value, so a
    constant image stays exactly constant.
    """
    if x.ndim < 3:
        raise ProbeError(
            f"a blur baseline needs inputs with spatial axes (batch, channels, ...), "
            f"got shape {list(x.shape)}"
        )
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x).view(1, 1, -1)
    out = x
    for axis in range(2, x.ndim):
        moved = out.movedim(axis, -1)
        flat = moved.reshape(-1, 1, moved.shape[-1])
        padded = F.pad(flat, (radius, radius), mode="replicate")
        blurred = F.conv1d(padded, kernel).reshape(moved.shape)
        out = blurred.movedim(-1, axis)
    return out.contiguous()


def uniform_noise(
    shape: tuple[int, ...], low: float, high: float, seed: int, position: int = 0
) -> torch.Tensor:
    """Noise uniform in [low, high) for the sample at ``position`` (float32, CPU): the same for the
    same seed, position and shape."""
    generator = sample_generator(seed, position, "baseline")
    return low + (high - low) * torch.rand(shape, generator=generator)


@lru_cache(maxsize=8)
def load_baseline_file(path: str) -> np.ndarray:
    """Read a baseline saved with ``numpy.save``: one input without the batch axis."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"baseline file {path!r} does not exist")
    try:
        array = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        # numpy's own text would suggest unpickling the file; a baseline is never unpickled.
        raise ConfigError(
            f"baseline file {path!r} is not a readable .npy array: a baseline file is one input of "
            "numbers, written by numpy.save"
        ) from None
    if not np.issubdtype(array.dtype, np.number):
        raise ConfigError(f"baseline file {path!r} holds {array.dtype} values; it must be numeric")
    array.setflags(write=False)
    return array


def _broadcast_one(baseline: torch.Tensor, x: torch.Tensor, what: str) -> torch.Tensor:
    """Repeat one input-shaped baseline over the batch of ``x``."""
    sample_shape = tuple(x.shape[1:])
    if tuple(baseline.shape) == (1, *sample_shape):
        baseline = baseline[0]
    if tuple(baseline.shape) != sample_shape:
        raise ProbeError(
            f"the baseline from {what} has shape {list(baseline.shape)}, but each input has shape "
            f"{list(sample_shape)}; a baseline is one input in the model's input space"
        )
    return baseline.to(device=x.device, dtype=x.dtype).expand_as(x).clone()


__all__ = [
    "gaussian_blur",
    "load_baseline_file",
    "make_baseline",
    "make_baseline_distribution",
    "uniform_noise",
]
