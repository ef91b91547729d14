"""Raw probe data to model inputs, as the config's ``probe.preprocess`` says: resize, centre crop,
scale, normalise (the order of torchvision's transforms in Captum's tutorial).
"""

from __future__ import annotations

import numpy as np
import torch

from mlflow_xai.config.sections import PreprocessConfig
from mlflow_xai.errors import ProbeError

# --------------------------------------------------------------------------------------------------
# Preprocessing


def preprocess_batch(
    x: np.ndarray, config: PreprocessConfig | None, what: str = "probe inputs"
) -> np.ndarray:
    """Raw inputs (B, ...) to model inputs: resize, center_crop, scale, normalize.

    Resizing 8-bit images before scaling them gives what torchvision's ``Resize`` gives on a PIL
    image, up to one 8-bit level where rounding differs.
    """
    integer = np.issubdtype(x.dtype, np.integer) or x.dtype == bool
    if config is None:
        if integer:
            raise ProbeError(_scale_advice(x.dtype, what))
        return x
    if integer and config.scale is None:
        raise ProbeError(_scale_advice(x.dtype, what))
    if not (integer or np.issubdtype(x.dtype, np.floating)):
        raise ProbeError(f"{what} must be numbers, got {x.dtype}")
    spatial = config.resize is not None or config.center_crop is not None or config.mean is not None
    if spatial and x.ndim != 4:
        raise ProbeError(
            f"probe.preprocess resize, center_crop and mean/std apply to images (N, C, H, W); "
            f"{what} have shape {list(x.shape)}"
        )
    dtype = torch.float64 if x.dtype == np.float64 else torch.float32
    t = torch.from_numpy(np.ascontiguousarray(x))
    if t.dtype != torch.uint8:  # 8-bit images are resized as 8-bit, like PIL images in torchvision
        t = t.to(dtype)
    t = _resize_and_crop(t, config, antialias=True).to(dtype)
    if config.scale is not None:
        t = t / config.scale
    if config.mean is not None:
        channels = t.shape[1]
        if len(config.mean) != channels:
            raise ProbeError(
                f"probe.preprocess mean/std have {len(config.mean)} values but {what} have {channels} "
                "channels; give one value per channel"
            )
        mean = torch.tensor(config.mean, dtype=t.dtype).view(1, -1, 1, 1)
        std = torch.tensor(config.std, dtype=t.dtype).view(1, -1, 1, 1)
        t = (t - mean) / std
    return t.numpy()


def preprocess_masks(masks: np.ndarray, config: PreprocessConfig | None) -> np.ndarray:
    """Masks (B, H, W) follow the images' resize (nearest pixel) and crop."""
    if config is None or (config.resize is None and config.center_crop is None):
        return masks
    t = torch.from_numpy(np.ascontiguousarray(masks).astype(np.uint8)).unsqueeze(1)
    return _resize_and_crop(t, config, antialias=False).squeeze(1).numpy().astype(bool)


def _resize_and_crop(t: torch.Tensor, config: PreprocessConfig, *, antialias: bool) -> torch.Tensor:
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as tvf

    mode = InterpolationMode.BILINEAR if antialias else InterpolationMode.NEAREST
    if config.resize is not None:
        size = [config.resize] if isinstance(config.resize, int) else list(config.resize)
        t = tvf.resize(t, size, interpolation=mode, antialias=antialias)
    if config.center_crop is not None:
        crop = config.center_crop
        size = [crop, crop] if isinstance(crop, int) else list(crop)
        if size[0] > t.shape[-2] or size[1] > t.shape[-1]:
            raise ProbeError(
                f"probe.preprocess center_crop {size} is larger than the image ({list(t.shape[-2:])} "
                "after resize); crop at most the image size"
            )
        t = tvf.center_crop(t, size)
    return t


def _scale_advice(dtype: np.dtype, what: str) -> str:
    return (
        f"{what} are {dtype}, but the model takes floating point and integer data is never scaled "
        "by guess; declare the scale in the config (probe: {preprocess: {scale: 255}} for 8-bit "
        "images) or convert the data to floats yourself"
    )
