"""Parameters of the methods over tokens (``methods.layer_integrated_gradients``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlflow_xai.attribution.parameters.integrated_gradients import IntegratedGradientsConfig
from mlflow_xai.attribution.parameters.perturbation import KernelShapConfig, LimeConfig
from mlflow_xai.strict import NonNegativeFloat, PositiveInt, _Strict

#: What a token becomes in a text baseline: the padding, mask or unknown token, or a zero embedding.
TOKEN_BASELINES = ("pad", "mask", "unk", "zero")


class LayerIntegratedGradientsConfig(IntegratedGradientsConfig):
    """Integrated Gradients of a text probe at the model's token embedding layer: the path runs from
    the baseline's embeddings to the input's, with the attention mask and the positions held fixed.
    Every other key is as for ``integrated_gradients`` (``n_steps: auto`` included).

    The baseline keeps the special tokens (``text.special_token_ids``, and the model's own
    [CLS]/[SEP]/BOS/EOS where its config names them) and the padding, and replaces every other token
    by ``pad``, ``mask`` or ``unk`` (``text.<kind>_token_id``), or by a zero embedding. A token's
    score is the sum of its attributions over the hidden features, with nothing normalised, so the
    scores of a sample add up to F(x) - F(x')."""

    baseline: Literal[TOKEN_BASELINES] = Field(  # type: ignore[valid-type,assignment]
        default="pad", description="what the non-special tokens become: pad, mask or unk token, or zero"
    )


class TokenOcclusionConfig(_Strict):
    """Occlusion of a text probe, one token at a time: each token that the baseline replaces (not a
    special token, not padding) is set to its ``baseline`` (the pad, mask or unk token, or a zero
    embedding) and its score is the drop of the explained output, F(x) - F(x with it replaced). The
    positions and the attention mask stay as they are."""

    baseline: Literal[TOKEN_BASELINES] = Field(  # type: ignore[valid-type]
        default="pad", description="what an occluded token becomes: pad, mask or unk token, or zero"
    )
    internal_batch_size: PositiveInt = Field(default=128, description="occluded sequences per forward pass")


class TokenKernelShapConfig(KernelShapConfig):
    """KernelSHAP over the tokens of a text probe: each token the baseline replaces is one feature,
    switched between itself and its ``baseline`` token; special tokens and padding never move.
    Every other key is as for ``kernel_shap`` (the feature mask is the tokens)."""

    feature_mask: None = Field(default=None, exclude=True, description="the tokens (not configurable)")
    baseline: Literal[TOKEN_BASELINES] = Field(  # type: ignore[valid-type,assignment]
        default="pad", description="what a token switched off becomes: pad, mask or unk token, or zero"
    )


class TokenLimeConfig(LimeConfig):
    """LIME over the tokens of a text probe, as ``token_kernel_shap`` switches them; every other key
    is as for ``lime``."""

    feature_mask: None = Field(default=None, exclude=True, description="the tokens (not configurable)")
    baseline: Literal[TOKEN_BASELINES] = Field(  # type: ignore[valid-type,assignment]
        default="pad", description="what a token switched off becomes: pad, mask or unk token, or zero"
    )


class LayerGradientShapConfig(_Strict):
    """GradientSHAP (expected gradients) of a text probe at the token embedding layer: for each of
    ``n_samples`` draws, a point at a uniform random fraction of the way from the baseline's
    embeddings to the input's (plus Gaussian noise of ``stdevs`` on the tokens the baseline
    replaces), and (noisy input - baseline) x gradient there, averaged and summed per token. The
    draws are seeded by (seed, the sample's position); the scores add up to F(x) - F(x') only in
    expectation."""

    n_samples: PositiveInt = Field(default=16, description="random points per input")
    stdevs: NonNegativeFloat = Field(default=0.0, description="std of the noise added to the embeddings")
    baseline: Literal[TOKEN_BASELINES] = Field(  # type: ignore[valid-type]
        default="pad", description="what the non-special tokens become: pad, mask or unk token, or zero"
    )
    internal_batch_size: PositiveInt = Field(default=128, description="points per forward/backward pass")
    seed: int = Field(default=0, description="seed of the draws (with each sample's position)")
