"""The sections of the audit config beside the methods: checks, artifacts, gate, probe, precision
and the distributed engine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_serializer,
    model_validator,
)

from mlflow_xai.attribution.parameters import BaselineConfig
from mlflow_xai.config.classes import CLASS_INDEX_LAYOUTS, class_index_of, read_class_index
from mlflow_xai.errors import ConfigError
from mlflow_xai.strict import NonNegativeFloat, PositiveInt, _Strict, brief


class CompletenessConfig(_Strict):
    tolerance: NonNegativeFloat = Field(default=0.01, description="max relative completeness error")
    degenerate_floor: NonNegativeFloat = Field(
        default=1e-6, description="|F(x) - F(x')| below this marks a degenerate baseline"
    )


class DeletionInsertionConfig(_Strict):
    """Deletion and insertion curves of every method's ranking, against random rankings
    (``mlflow_xai.checks.faithfulness``). Metrics per method: ``deletion_auc``, ``insertion_auc``,
    their random controls (``deletion_random_auc``, ...) and ``deletion_margin`` /
    ``insertion_margin``, the method's lead over random (> 0 is better than random), each as
    _mean/_p95/_max; and ``deletion_insertion_seconds``.

    Removed features become ``baseline`` (any baseline kind: zeros, a constant, a blur of the
    input, the probe mean, ...). A hard replacement can itself move the output (the class leakage
    ROAD's noisy imputation avoids); the random control pays the same price, so hold the margin.
    ``removal: noisy_linear`` (images) fills the features out of place from their neighbours instead
    (Rong et al. 2022), at the cost of a linear solve per perturbed input; the curves still end at
    F(x) and at F(baseline)."""

    steps: Annotated[int, Field(ge=2)] = Field(
        default=10, description="equal fractions of the features removed (or inserted) one after another"
    )
    baseline: BaselineConfig = BaselineConfig()
    features: Literal["elements", "pixels", "patches"] = Field(
        default="elements",
        description="what is removed together: each input element, all channels of a pixel, or a patch",
    )
    patch_size: PositiveInt = Field(default=4, description="patches: side of a square patch in pixels")
    random_draws: PositiveInt = Field(default=3, description="random rankings averaged for the control")
    seed: int = Field(default=0, description="seed of the random rankings (with each sample's position)")
    internal_batch_size: PositiveInt = Field(default=128, description="perturbed inputs per forward pass")
    removal: Literal["baseline", "noisy_linear"] = Field(
        default="baseline",
        description="what features out of place become: the baseline, or (images) ROAD's noisy linear "
        "imputation from their neighbours",
    )
    noise: NonNegativeFloat = Field(
        default=0.01, description="noisy_linear: standard deviation of the noise added to imputed values"
    )

    @model_serializer(mode="wrap")
    def _options_that_apply(self, handler: Any) -> Any:
        # patch_size means something for patches only and noise for noisy_linear only; each is refused
        # elsewhere, so a dumped config leaves them out to load back.
        data = handler(self)
        if self.features != "patches":
            data.pop("patch_size", None)
        if self.removal != "noisy_linear":
            data.pop("noise", None)
        return data

    @model_validator(mode="after")
    def _patch_size_with_patches(self) -> DeletionInsertionConfig:
        if "patch_size" in self.model_fields_set and self.features != "patches":
            raise ValueError(f"patch_size applies to features 'patches' only, not {self.features!r}")
        if "noise" in self.model_fields_set and self.removal != "noisy_linear":
            raise ValueError(f"noise applies to removal 'noisy_linear' only, not {self.removal!r}")
        return self


class InfidelityConfig(_Strict):
    """Infidelity (Yeh et al. 2019, ``captum.metrics.infidelity``): the mean squared gap between
    the attribution's linear prediction of a Gaussian perturbation's effect and the model's;
    metric ``xai/<method>/infidelity_mean`` (lower is better)."""

    n_perturb_samples: PositiveInt = Field(default=10, description="perturbations per sample")
    noise_scale: Annotated[float, Field(gt=0.0)] = Field(
        default=0.1, description="standard deviation of the Gaussian perturbation, in input units"
    )
    seed: int = Field(default=0, description="seed of the perturbations (with each sample's position)")


class SensitivityConfig(_Strict):
    """Max-sensitivity (Yeh et al. 2019, ``captum.metrics.sensitivity_max``): the largest relative
    change of the attribution under uniform input perturbations of at most ``radius``; metric
    ``xai/<method>/sensitivity_max_mean`` (lower is better). Costs ``n_perturb_samples`` extra
    attributions per sample."""

    n_perturb_samples: PositiveInt = Field(default=10, description="perturbations per sample")
    radius: Annotated[float, Field(gt=0.0)] = Field(
        default=0.02, description="largest perturbation of each input value, in input units"
    )
    seed: int = Field(default=0, description="seed of the perturbations (with each sample's position)")


class RandomisationConfig(_Strict):
    """Model randomisation sanity check (Adebayo et al. 2018, ``mlflow_xai.checks.randomisation``):
    each method explains copies of the model with its layers randomised from the top down, and its
    maps are compared with the trained model's. Metrics per method: ``randomisation_similarity``
    (after the top ``depth`` of the layers are randomised; lower is better), ``randomisation_passed``
    (fraction of samples below ``max_similarity``), ``randomisation_final_similarity`` (every layer
    randomised) and ``randomisation_entropy_rise`` (Efficient MPRT: > 1 is better); and
    ``randomisation_seconds``. Costs one attribution per stage for every method. The user's model
    is never written to: the layers of a copy are randomised."""

    similarity: Literal["spearman", "spearman_abs", "top_k", "ssim"] = Field(
        default="spearman",
        description="what the verdict compares: rank correlation of the signed maps or of |maps|, "
        "overlap of the top features, or structural similarity of image maps",
    )
    max_similarity: Annotated[float, Field(ge=-1.0, le=1.0)] = Field(
        default=0.5, description="a method passes when its maps' similarity falls below this"
    )
    depth: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        default=0.5, description="fraction of the cascade's stages, from the top, randomised for the verdict"
    )
    max_stages: PositiveInt = Field(
        default=8, description="stages of the cascade; more layers than this are grouped"
    )
    top_k: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        default=0.1, description="top_k: fraction of the features compared"
    )
    seed: int = Field(default=0, description="seed of the randomised weights (with each layer's name)")


class EraserConfig(_Strict):
    """Comprehensiveness and sufficiency of every method's token ranking (text probes; ERASER,
    DeYoung et al. 2020, ``mlflow_xai.checks.eraser``), against random rankings. Metrics per method:
    ``comprehensiveness`` (the output's drop without the top tokens; higher is better),
    ``sufficiency`` (its drop with the top tokens alone; lower is better), their random controls and
    margins (> 0 beats chance), each as _mean/_p95/_max; and ``eraser_seconds``.

    ``removal: replace`` sets the removed tokens to the ``baseline`` token (or a zero embedding):
    positions stay, but the sequence is one the model never saw. ``removal: delete`` drops them and
    shifts the rest left, padding the end: the text stays natural, but positions move."""

    bins: list[Annotated[float, Field(gt=0.0, le=100.0)]] = Field(
        default_factory=lambda: [1.0, 5.0, 10.0, 20.0, 50.0],
        min_length=1,
        description="the rationale sizes, in percent of a sample's rankable tokens (at least one token)",
    )
    removal: Literal["replace", "delete"] = Field(
        default="replace", description="removed tokens are replaced by the baseline token, or deleted"
    )
    baseline: Literal["pad", "mask", "unk", "zero"] = Field(
        default="mask", description="replace: what a removed token becomes"
    )
    random_draws: PositiveInt = Field(default=3, description="random rankings averaged for the control")
    seed: int = Field(default=0, description="seed of the random rankings (with each sample's position)")
    internal_batch_size: PositiveInt = Field(default=128, description="sequences per forward pass")


class ChecksConfig(_Strict):
    completeness: CompletenessConfig = CompletenessConfig()
    eraser: EraserConfig | None = Field(
        default=None, description="text probes: comprehensiveness and sufficiency per method; null = off"
    )
    randomisation: RandomisationConfig | None = Field(
        default=None, description="model randomisation sanity check per method; null = off"
    )
    infidelity: InfidelityConfig | None = Field(default=None, description="infidelity per method; null = off")
    sensitivity: SensitivityConfig | None = Field(
        default=None, description="max-sensitivity per method; null = off"
    )
    deletion_insertion: DeletionInsertionConfig | None = Field(
        default=None, description="deletion and insertion curves against random rankings; null = off"
    )


def check_display_channels(mean: list[float], channels: int, source: str) -> None:
    """Refuse a display mean/std (from ``source``) that has neither one value per channel nor one for
    all; the engine calls it before any compute, the artifact writer for a report built elsewhere."""
    if len(mean) not in (1, channels):
        raise ConfigError(
            f"{source} has {len(mean)} values per channel (mean and std) but the probe's images have "
            f"{channels} channels; give one value per channel, or one for all"
        )


class ArtifactsConfig(_Strict):
    """What the review artifacts draw. The sheets follow Captum's ``visualize_image_attr_multiple``:
    ``sheet_columns`` are its visualisation methods, ``sign`` its sign modes and ``outlier_perc`` its
    normalisation (the largest attributions holding that percentage of an image's total |attribution|
    saturate; ``color_scale`` replaces that per-image scale with one fixed bound). ``masked_image``
    and ``alpha_scaling`` scale the input by the normalised map, so they need a one-signed ``sign``.

    ``display`` says how an image input is drawn, with one map from model inputs to colours for
    every row of every sheet (a min-max stretch of each image on its own would show one colour in a
    different shade in each row):

    - ``auto`` (the default): where ``probe.preprocess`` has ``mean``/``std``, the probe's
      normalisation undone, ``x * std + mean`` per channel, clipped to [0, 1]. Without them, inputs
      that lie in [0, 1] over the whole probe set are shown as they are; any others are stretched
      with one min-max over the whole probe set, a fallback that the sheet's title names and a
      warning reports: the colours are then not the image's own, and ``display`` should say how the
      probe was normalised.
    - ``{mean: [...], std: [...]}``: undo a normalisation made outside the package (a ProbeSet
      passed already normalised), one value per channel or one for all channels. It takes
      precedence over ``probe.preprocess``.
    - ``none``: the inputs as they are, clipped to [0, 1].
    - ``minmax``: one min-max stretch over the whole probe set.

    Tabular probes draw no image: ``display`` and the sheet settings do not apply to them.
    """

    sheet_samples: Annotated[int, Field(ge=0)] = Field(
        default=8, description="samples drawn in each method's PNG sheet"
    )
    mask_dtype: Literal["float16", "float32"] = "float16"
    sign: Literal["all", "positive", "negative", "absolute_value"] = Field(
        default="all", description="attributions shown in the heat maps, as in Captum's visualiser"
    )
    color_scale: Annotated[float, Field(gt=0.0)] | None = Field(
        default=None, description="fixed heat-map bound shared by all methods and runs; null = per image"
    )
    feature_bars: Annotated[int, Field(ge=1)] = Field(
        default=20, description="tabular probes: features shown in the attribution bar chart"
    )
    sheet_columns: Annotated[
        list[Literal["original_image", "heat_map", "blended_heat_map", "masked_image", "alpha_scaling"]],
        Field(min_length=1),
    ] = Field(
        default=["original_image", "heat_map", "blended_heat_map"],
        description="the panels of each sheet row, Captum's visualisation methods, in order",
    )
    outlier_perc: Annotated[float, Field(ge=0.0)] = Field(
        default=2.0,
        description="per-image colour scale: the largest attributions holding this percentage of the "
        "total |attribution| saturate (Captum's default 2; 0 = scale to the largest value)",
    )
    display: Literal["auto", "none", "minmax"] | dict[str, list[float]] = Field(
        default="auto",
        description="how image inputs are drawn: auto, none, minmax, or {mean: [...], std: [...]} to undo",
    )

    @field_validator("outlier_perc")
    @classmethod
    def _below_100(cls, value: float) -> float:
        if value >= 100.0:
            raise ValueError(
                f"must be < 100, got {value:g}: at 100 every attribution would count as an outlier and "
                "the scale would be the smallest value"
            )
        return value

    @field_validator("display", mode="before")
    @classmethod
    def _display(cls, value: Any) -> Any:
        # One message per mistake, naming what is allowed, instead of one per branch of the union.
        allowed = "'auto', 'none', 'minmax' or a mapping {mean: [...], std: [...]}"
        if isinstance(value, str):
            if value not in ("auto", "none", "minmax"):
                raise ValueError(f"must be {allowed}, got {brief(value)}")
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"must be {allowed}, got {brief(value)}")
        keys = set(value)
        if keys != {"mean", "std"}:
            other = ", ".join(sorted(map(str, keys - {"mean", "std"}))) or "none"
            missing = ", ".join(sorted({"mean", "std"} - keys)) or "none"
            raise ValueError(
                f"a display mapping takes mean and std, one value per channel (or one for all), to undo "
                f"x = (raw - mean) / std; missing: {missing}; not allowed: {other}"
            )
        numbers = {}
        for name in ("mean", "std"):
            values = value[name]
            listed = isinstance(values, (list, tuple)) and len(values) > 0
            finite = listed and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
            )
            if not finite:  # YAML's true/false are no numbers here
                raise ValueError(
                    f"display {name} must be a non-empty list of finite numbers, got {brief(values)}"
                )
            numbers[name] = [float(v) for v in values]
        if any(v <= 0 for v in numbers["std"]):
            raise ValueError(f"display std values must be > 0, got {numbers['std']}")
        if len(numbers["mean"]) != len(numbers["std"]):
            raise ValueError(
                f"display mean has {len(numbers['mean'])} values and std {len(numbers['std'])}; give one "
                "of each per channel"
            )
        return numbers

    @model_validator(mode="after")
    def _one_signed_columns(self) -> ArtifactsConfig:
        scaled = [c for c in self.sheet_columns if c in ("masked_image", "alpha_scaling")]
        if scaled and self.sign == "all":
            raise ValueError(
                f"sheet_columns {', '.join(dict.fromkeys(scaled))} cannot show sign 'all': they scale "
                "the image by the normalised map, which must be one-signed (as in Captum); set sign to "
                "positive, negative or absolute_value, or drop them"
            )
        return self


class ThresholdConfig(_Strict):
    """Warn and fail levels of one metric, absolute or relative to the baseline model's value.

    With ``relative: true`` a level is the allowed relative change against the baseline model, in
    the bad direction: 0.1 fails (or warns) when the metric is 10% worse than the baseline's.
    """

    warn: float | None = None
    fail: float | None = None
    higher_is_better: bool = Field(default=False, description="direction of the metric")
    relative: bool = Field(default=False, description="levels relative to the baseline model")

    @model_validator(mode="after")
    def _some_level(self) -> ThresholdConfig:
        if self.warn is None and self.fail is None:
            raise ValueError("a threshold needs a warn level, a fail level or both")
        if self.relative and any(v is not None and v < 0 for v in (self.warn, self.fail)):
            raise ValueError("relative levels are allowed changes and must be >= 0")
        if self.warn is not None and self.fail is not None:
            ordered = self.warn <= self.fail if not self.higher_is_better else self.warn >= self.fail
            if self.relative:
                ordered = self.warn <= self.fail
            if not ordered:
                raise ValueError(
                    f"the warn level {self.warn} must be reached before the fail level {self.fail}"
                )
        return self


class GateConfig(_Strict):
    """What ``mlflow-xai audit`` and ``mlflow-xai gate`` judge, and which levels fail the job."""

    fail_on: list[Literal["fail", "warn"]] = Field(default=["fail"], min_length=1)
    thresholds: dict[str, ThresholdConfig] = Field(
        default_factory=dict, description="metric name (xai/<method>/<quantity>) to its levels"
    )
    method_checks: bool = Field(
        default=True, description="each method's own checks (completeness) are gate checks too"
    )
    seed_runs: PositiveInt = Field(
        default=1,
        description="audits run with every seed shifted (1 = off, 2 = a second seed): each metric's "
        "spread over them is reported, and a threshold closer to its metric than that is flagged",
    )

    @model_validator(mode="after")
    def _metric_names(self) -> GateConfig:
        for name in self.thresholds:
            if not name.startswith("xai/") or name.count("/") not in (2, 3):
                raise ValueError(
                    f"threshold key {name!r} must be a metric name of the form xai/<method>/<quantity> "
                    "(or xai/<method>/<target>/<quantity> for one of several targets), e.g. "
                    "xai/integrated_gradients/completeness_rel_error_p95"
                )
        return self


class PreprocessConfig(_Strict):
    """How raw probe data becomes model input, in this order (as torchvision's transforms in
    Captum's tutorial): ``resize``, ``center_crop``, divide by ``scale``, then normalize with
    ``mean``/``std`` per channel. Integer (e.g. uint8) data needs a ``scale``: it is never guessed.

    ``resize: 256`` scales the shorter side to 256 pixels (aspect kept); ``resize: [h, w]`` and
    ``center_crop: [h, w]`` give both sides; ``center_crop: 224`` means 224 x 224.
    """

    scale: Annotated[float, Field(gt=0.0)] | None = Field(
        default=None, description="divide raw values by this, e.g. 255 for uint8 images"
    )
    resize: PositiveInt | Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = None
    center_crop: PositiveInt | Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = None
    mean: list[float] | None = Field(default=None, min_length=1, description="per-channel mean")
    std: list[Annotated[float, Field(gt=0.0)]] | None = Field(
        default=None, min_length=1, description="per-channel standard deviation"
    )

    @model_validator(mode="after")
    def _mean_with_std(self) -> PreprocessConfig:
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std go together: give both (one value per channel) or neither")
        if self.mean is not None and len(self.mean) != len(self.std):
            raise ValueError(
                f"mean has {len(self.mean)} values and std {len(self.std)}; give one of each per channel"
            )
        return self


class ProbeConfig(_Strict):
    """How the probe set is read: its preprocessing, how ``max_samples`` picks samples, and which
    class of the model each class folder of an image folder holds.

    Without ``class_index`` an image folder is labelled as ``torchvision.datasets.ImageFolder``
    labels it: by the folder's position in sorted order (cat=0, dog=1). That is the model's class
    only for a model trained on that very layout; an ImageNet model knows a tabby cat as 281, so
    ``target: label`` would explain the wrong classes and the accuracy would score against them.
    ``class_index`` names each folder's class of the model, inline (``class_index: {cat: 281,
    dog: 207}``) or as the path of a JSON file (relative to the working directory) in one of two
    layouts:

    - folder name to class index: ``{"cat": 281, "dog": 207}``;
    - class index to ``[folder name, description]``, the layout of Keras' ``imagenet_class_index.json``
      that many PyTorch ImageNet examples use (``{"281": ["n02123045", "tabby"], ...}``):
      the folder names are then the WordNet ids (``n02123045``), as ImageNet's own class folders
      are named; the description (``tabby``) is not matched against folder names.

    The file is read when the config is validated and the config keeps the mapping, not the path:
    the logged config then records which classes the labels meant even if the file changes later.
    Indices are integers >= 0 and no two folders may share one. A class index may name more
    folders than the probe has (all 1000 ImageNet classes), but it must name every class folder of
    the probe, and it applies to image folders only: other sources carry their own labels.
    """

    sampling: Literal["first", "random", "stratified"] = Field(
        default="first",
        description="max_samples takes the first samples, a seeded random draw, or a seeded draw "
        "per label in proportion to its share",
    )
    preprocess: PreprocessConfig | None = None
    tokenizer: str | None = Field(
        default=None,
        description="raw texts: a folder holding a tokenizer saved with save_pretrained (never downloaded)",
    )
    max_length: PositiveInt | None = Field(
        default=None, description="raw texts: tokens kept per text (truncated beyond); null = the longest"
    )
    class_index: dict[str, Annotated[int, Field(ge=0)]] | None = Field(
        default=None,
        description="image folders: the model's class index of each class folder, a mapping or a JSON "
        "file; null = the folder's position in sorted order (as torchvision's ImageFolder)",
    )

    @field_validator("class_index", mode="before")
    @classmethod
    def _class_index(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (str, Path)):
            return read_class_index(value)
        if not isinstance(value, Mapping):
            raise ValueError(
                f"must be {CLASS_INDEX_LAYOUTS}, given inline or as the path of a JSON file, got "
                f"{brief(value)}"
            )
        return class_index_of(value, "the mapping")


class PrecisionConfig(_Strict):
    """Numerics of the audit. Inputs follow the model's parameter dtype (float32 unless the model is
    float64). ``autocast`` runs only the gradient passes (the points along an attribution path) in
    lower precision; every output that is reported or checked (predictions, F(x), F(x')) is
    computed in full precision. On the CPU only bfloat16 autocast is supported."""

    autocast: Literal["bfloat16", "float16"] | None = Field(
        default=None, description="precision of the gradient passes; null = full precision"
    )
    tf32: bool = Field(default=False, description="let CUDA matmuls and convolutions use TF32")


class DistributedConfig(_Strict):
    """Where the audit's batches are attributed: ``local`` (this process) or ``ray`` (a pool of actors
    on a Ray cluster, each loading the model once). Results do not depend on the engine: every batch
    is seeded by its position in the probe set, so a Ray audit matches a local one sample for sample
    when both use the same batch size."""

    engine: Literal["local", "ray"] = "local"
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster to join, e.g. ray://head:10001 or auto; null = $RAY_ADDRESS, "
        "else start a local cluster for this audit",
    )
    num_actors: PositiveInt = Field(default=2, description="attribution actors (model copies) in the pool")
    num_gpus: NonNegativeFloat = Field(
        default=0.0, description="GPUs per actor; 0 = CPU actors (fractions share a GPU)"
    )
    num_cpus: Annotated[float, Field(gt=0.0)] = Field(default=1.0, description="CPUs per actor")
    batch_size: PositiveInt | None = Field(
        default=None, description="probe samples per batch sent to an actor; null = the audit's batch_size"
    )
    max_restarts: Annotated[int, Field(ge=0)] = Field(
        default=3, description="times Ray restarts a failed actor before the audit fails"
    )
    max_task_retries: Annotated[int, Field(ge=0)] = Field(
        default=3, description="times a batch is retried on a restarted actor before the audit fails"
    )
    local_num_cpus: PositiveInt | None = Field(
        default=None, description="CPUs of a local cluster started for the audit; null = all"
    )


class TextConfig(_Strict):
    """Text probes (token ids): how the model's tokens are looked up and which ones a baseline keeps.

    Unset token ids are taken from the model's own config where it has one (a Hugging Face model's
    ``pad_token_id``, ...); a baseline that needs one that neither gives is refused before any
    compute."""

    embedding_layer: str | None = Field(
        default=None,
        description="the token embedding (an nn.Embedding); default: get_input_embeddings() or the "
        "model's only nn.Embedding",
    )
    pad_token_id: Annotated[int, Field(ge=0)] | None = Field(default=None, description="the padding token")
    mask_token_id: Annotated[int, Field(ge=0)] | None = Field(default=None, description="the mask token")
    unk_token_id: Annotated[int, Field(ge=0)] | None = Field(default=None, description="the unknown token")
    special_token_ids: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list,
        description="tokens a baseline keeps and rankings leave out ([CLS], [SEP], ...), beside the "
        "model's own",
    )
