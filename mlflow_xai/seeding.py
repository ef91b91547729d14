"""Random draws that depend on the seed and the sample's position in the probe set, nothing else.

Every random number an audit draws for a sample (a uniform baseline, GradientShap's points,
NoiseTunnel's noise, the coalitions of LIME and KernelSHAP, Shapley permutations) comes from a
generator seeded by ``sample_seed(seed, position, stream)``. So a sample's result is the same at any
``batch_size``, after an out-of-memory split, on a resumed audit and on any number of Ray actors.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def sample_seed(seed: int, position: int, stream: str) -> int:
    """A 63-bit seed for one sample's draws from ``stream`` (e.g. ``"baseline"``, ``"gradient_shap"``).

    Distinct streams give independent draws even when two config keys hold the same seed.
    """
    if position < 0:
        raise ValueError(f"a sample position is >= 0, got {position}")
    entropy = [seed % 2**64, int(position), zlib.crc32(stream.encode())]
    (state,) = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)
    return int(state) >> 1


def sample_generator(seed: int, position: int, stream: str) -> torch.Generator:
    """A CPU torch generator seeded for one sample's draws from ``stream``."""
    return torch.Generator(device="cpu").manual_seed(sample_seed(seed, position, stream))


__all__ = ["sample_generator", "sample_seed"]
