"""Model randomisation sanity check (Adebayo et al. 2018): does the explanation depend on the model?

The model's layers are randomised from the top down, cascading: stage 1 randomises the output
layer, stage 2 also the layer below it, and so on down to the input layer. At every stage the
method explains the partly random model on the same inputs and for the same classes, and each map
is compared with the trained model's. An explanation that reflects what the model learned changes
as soon as the layers it depends on lose their weights; one that stays alike while the top of the
network is noise (Guided Backprop on a ReLU CNN is the known case) reconstructs the input rather
than explaining the model.

- **Layers.** Every module that holds parameters of its own is a layer, in the order the model
  registers them (the order of its forward pass for sequential models). A normalisation layer
  (BatchNorm, LayerNorm, GroupNorm, ...) goes with the layer registered before it. A model with more
  layers than ``max_stages`` has them grouped into that many contiguous stages.
- **Randomised weights.** A layer with ``reset_parameters`` (every torch layer) is re-initialised by
  it, PyTorch's own default initialisation; any other parameter holder (the flat graph of an exported
  program) has the entries of each tensor shuffled, which keeps their scale and loses their
  arrangement. The draws are seeded by (``seed``, layer name) and made on the CPU, so a stage is the
  same on every batch, worker and device. They go into a copy of the model: the user's model object
  and its weights are never written to.
- **Similarity**, per sample, between the trained and the randomised model's maps: Spearman's rank
  correlation of the signed attributions (``spearman``) or of their absolute values
  (``spearman_abs``), the overlap of the top ``top_k`` fraction of features by |attribution|
  (``top_k``), and for images the structural similarity (``ssim``) of the channel-summed |attribution|
  maps, each scaled to [0, 1] by its maximum (Wang et al. 2004, a 7 x 7 uniform window). The signed
  Spearman is the default: Adebayo et al. report both with and without absolute values, and a map that
  keeps its signs when the class weights above it are noise is the clearest failure.
- **Verdict.** The configured similarity after the top ``depth`` fraction of the stages are randomised
  must fall below ``max_similarity``; its mean decides the method's verdict. The report also names
  the layer through which the maps stayed alike (mean similarity >= ``max_similarity`` at every stage
  from the top down to it).
- **Efficient MPRT** (Hedstrom et al. 2023): the rise of the map's entropy from the trained to the
  fully randomised model, ``H(random) / H(trained)`` with ``H`` the Shannon entropy of |a| / sum |a|
  over the features. An explanation of a random model should look like noise (a rise above 1).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mlflow_xai.checks.drift import attribution_drift
from mlflow_xai.seeding import sample_seed

#: The per-sample quantities of the check and their kinds, as ``Attribution.extras`` names them.
RANDOMISATION_QUANTITIES = {
    "randomisation_similarity": float,
    "randomisation_passed": bool,
    "randomisation_final_similarity": float,
    "randomisation_entropy_rise": float,
}

#: The similarity measures, each also kept per stage as ``randomisation_cascade_<measure>`` (B, stages).
SIMILARITIES = ("spearman", "spearman_abs", "top_k", "ssim")

_NORMALISATION = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def cascade_layers(model: nn.Module) -> list[list[str]]:
    """The model's layers from the top down, each the names of the modules randomised together."""
    layers: list[list[str]] = []
    for name, module in model.named_modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        if isinstance(module, _NORMALISATION) and layers:
            layers[-1].append(name)
        else:
            layers.append([name])
    return layers[::-1]


def _grouped(layers: Sequence[list[str]], max_stages: int) -> list[list[list[str]]]:
    """The layers in at most ``max_stages`` contiguous groups, as even as they come (the first
    groups take one layer more when they do not divide evenly)."""
    count = min(len(layers), max_stages)
    if count == 0:
        return []
    size, extra = divmod(len(layers), count)
    groups, start = [], 0
    for k in range(count):
        end = start + size + (1 if k < extra else 0)
        groups.append(list(layers[start:end]))
        start = end
    return groups


def cascade_stages(layers: Sequence[list[str]], max_stages: int) -> list[list[str]]:
    """The module names each stage randomises, top down: ``layers`` (``cascade_layers``) in at most
    ``max_stages`` contiguous groups."""
    return [[name for layer in group for name in layer] for group in _grouped(layers, max_stages)]


def cascade_labels(model: nn.Module, max_stages: int) -> list[str]:
    """Each stage's label: the lowest layer randomised once the stage has run (its first module,
    not the normalisation that goes with it); ``(model)`` for parameters of the model itself."""
    return [group[-1][0] or "(model)" for group in _grouped(cascade_layers(model), max_stages)]


def verdict_stage(stages: int, depth: float) -> int:
    """The 1-based stage at which the top ``depth`` fraction of the cascade is randomised."""
    return max(1, min(stages, math.ceil(depth * stages - 1e-9)))


def _randomised_state(module: nn.Module, name: str, seed: int) -> dict[str, torch.Tensor]:
    """The randomised parameters (and reset buffers) of one module, drawn on the CPU."""
    stream = f"randomisation/{name}"
    own = dict(module.named_parameters(recurse=False))
    has_children = any(True for _ in module.children())
    if hasattr(module, "reset_parameters") and not has_children:
        clone = copy.deepcopy(module).cpu()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(seed, 0, stream))
            clone.reset_parameters()
        return {key: value.detach().clone() for key, value in clone.state_dict().items()}
    generator = torch.Generator().manual_seed(sample_seed(seed, 0, stream))
    out = {}
    for key, value in own.items():
        flat = value.detach().cpu().reshape(-1)
        out[key] = flat[torch.randperm(flat.numel(), generator=generator)].reshape(value.shape)
    return out


class RandomisedCascade:
    """A copy of ``model`` that ``stages()`` randomises from the top down, stage after stage.

    ``model`` is only read: copied once here, and its weights read back into the copy at the start
    of every cascade."""

    def __init__(self, model: nn.Module, *, max_stages: int = 8, seed: int = 0) -> None:
        self.model = model
        layers = cascade_layers(model)
        if not layers:
            raise ValueError("the model has no parameters: there is nothing to randomise")
        self.stages = cascade_stages(layers, max_stages)
        self.copy = copy.deepcopy(model)
        modules = dict(self.copy.named_modules())
        self._random = [
            [(modules[name], _randomised_state(modules[name], name, seed)) for name in stage]
            for stage in self.stages
        ]

    def cascade(self) -> Iterator[nn.Module]:
        """The copy after each stage, from the top down (the same object, changed in place)."""
        self.copy.load_state_dict(self.model.state_dict())
        for stage in self._random:
            with torch.no_grad():
                for module, state in stage:
                    for key, value in state.items():
                        getattr(module, key).copy_(value)  # a module's own tensors: no dots
            yield self.copy


def ssim(trained: torch.Tensor, randomised: torch.Tensor, window: int = 7) -> torch.Tensor:
    """(B,) mean structural similarity of the channel-summed |attribution| images (B, C, H, W), each
    scaled by its maximum; NaN for an all-zero map. The window shrinks to fit small images."""
    a, b = (t.detach().abs().double().sum(dim=1, keepdim=True) for t in (trained, randomised))
    peak_a, peak_b = (t.flatten(1).amax(dim=1).view(-1, 1, 1, 1) for t in (a, b))
    a, b = a / peak_a, b / peak_b
    size = min(window, a.shape[2], a.shape[3])

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, size, stride=1)

    mu_a, mu_b = mean(a), mean(b)
    var_a, var_b = mean(a * a) - mu_a**2, mean(b * b) - mu_b**2
    cov = mean(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    value = index.flatten(1).mean(dim=1)
    zero = (peak_a.flatten() == 0) | (peak_b.flatten() == 0)
    return torch.where(zero, torch.full_like(value, float("nan")), value)


def similarities(
    trained: torch.Tensor, randomised: torch.Tensor, *, top_k: float = 0.1
) -> dict[str, torch.Tensor]:
    """Each measure of ``SIMILARITIES`` between two (B, *shape) batches of maps, (B,) float64;
    ``ssim`` only for images (B, C, H, W)."""
    from mlflow_xai.checks.convergence import spearman_rank_correlation

    a, b = trained.detach().double().cpu(), randomised.detach().double().cpu()
    drift = attribution_drift(a.numpy(), b.numpy(), top_fraction=top_k)
    out = {
        "spearman": spearman_rank_correlation(a, b),
        "spearman_abs": torch.from_numpy(drift["drift_rank_correlation"]),
        "top_k": torch.from_numpy(drift["drift_topk_overlap"]).double(),
    }
    if a.ndim == 4:
        out["ssim"] = ssim(a, b)
    return out


def attribution_entropy(values: torch.Tensor) -> torch.Tensor:
    """(B,) Shannon entropy (nats) of |a| / sum |a| over the features; NaN for an all-zero map."""
    p = values.detach().double().abs().flatten(1)
    total = p.sum(dim=1, keepdim=True)
    p = p / total
    terms = torch.where(p > 0, p * torch.log(p), torch.zeros_like(p))
    entropy = -terms.sum(dim=1)
    return torch.where(total.flatten() > 0, entropy, torch.full_like(entropy, float("nan")))


def stayed_similar(mean_by_stage: Sequence[float], max_similarity: float) -> int:
    """How many stages, from the top, kept a mean similarity >= ``max_similarity`` (0: the maps
    changed at the first stage)."""
    count = 0
    for value in mean_by_stage:
        if not value >= max_similarity:  # NaN ends the run as well
            break
        count += 1
    return count


class RandomisationScores:
    """The check's per-sample results for one method's maps of a batch, built stage by stage.

    ``trained`` (B, *shape) are the trained model's maps; ``add`` takes the maps after each cascade
    stage, top down (only the last is kept). ``result`` gives ``RANDOMISATION_QUANTITIES`` as (B,)
    tensors and, for every measure computed, ``randomisation_cascade_<measure>``: (B, stages) float64.
    """

    def __init__(
        self,
        trained: torch.Tensor,
        *,
        similarity: str = "spearman",
        top_k: float = 0.1,
        depth: float = 0.5,
        max_similarity: float = 0.5,
    ) -> None:
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {similarity!r}")
        if similarity == "ssim" and trained.ndim != 4:
            shape = tuple(trained.shape)
            raise ValueError(f"similarity 'ssim' compares images (B, C, H, W); maps are {shape}")
        self.trained = trained.detach()
        self.similarity, self.top_k, self.depth, self.max_similarity = (
            similarity,
            top_k,
            depth,
            max_similarity,
        )
        self.curves: dict[str, list[torch.Tensor]] = {}
        self.last: torch.Tensor | None = None

    def add(self, maps: torch.Tensor) -> None:
        for measure, value in similarities(self.trained, maps, top_k=self.top_k).items():
            self.curves.setdefault(measure, []).append(value)
        self.last = maps.detach()

    def result(self) -> dict[str, torch.Tensor]:
        if self.last is None:
            raise ValueError("the cascade has no stages")
        cascade = {measure: torch.stack(values, dim=1) for measure, values in self.curves.items()}
        chosen = cascade[self.similarity]
        at_verdict = chosen[:, verdict_stage(chosen.shape[1], self.depth) - 1]
        rise = attribution_entropy(self.last) / attribution_entropy(self.trained)
        out = {
            "randomisation_similarity": at_verdict,
            "randomisation_passed": at_verdict < self.max_similarity,
            "randomisation_final_similarity": chosen[:, -1],
            "randomisation_entropy_rise": rise.cpu(),
        }
        out.update({f"randomisation_cascade_{measure}": curve for measure, curve in cascade.items()})
        return out
