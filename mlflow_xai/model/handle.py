"""The model handle: device, audit mode, and the scalar output F that attributions explain."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn

from mlflow_xai.errors import ModelError

HOOK_ADVICE = (
    "log the model with mlflow.pytorch.log_model(..., serialization_format=\"pickle\") "
    "so that its layers are real modules"
)


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an explicit device must be available."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {spec!r} was asked for but CUDA is not available; use 'auto' or 'cpu'")
    if spec == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ModelError("device 'mps' was asked for but MPS is not available; use 'auto' or 'cpu'")
    return torch.device(spec)


def is_exported_graph(model: nn.Module) -> bool:
    """True for a graph whose layers are never called as modules (``torch.export`` / MLflow pt2).

    Module hooks never fire on such a graph: its layers were inlined into ATen ops, and the only
    modules it still calls are parameter-free helpers (``torch.export`` adds a ``_guards_fn``).
    A symbolically traced model (``torch.fx.symbolic_trace``) keeps calling its layers and is not one.
    """
    if not isinstance(model, torch.fx.GraphModule):
        return False
    for node in model.graph.nodes:
        if node.op == "call_module":
            called = model.get_submodule(str(node.target))
            if any(True for _ in called.parameters()):
                return False
    return True


def training_mode_ops(model: nn.Module) -> list[str]:
    """The ops of an exported graph that run in training mode: batch norm on batch statistics,
    dropout that drops. Read from each ATen op's own ``training``/``train`` argument, so every
    variant (``batch_norm``, ``native_batch_norm``, ``dropout``, ``feature_dropout``, ...) is seen.

    ``torch.export`` bakes the module's mode into the graph, and the graph refuses ``.eval()``: a
    model exported in train mode stays so.
    """
    if not isinstance(model, torch.fx.GraphModule):
        return []
    found = []
    for node in model.graph.nodes:
        schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
        if schema is None:
            continue
        for index, argument in enumerate(schema.arguments):
            if argument.name not in ("training", "train"):
                continue
            value = node.args[index] if index < len(node.args) else node.kwargs.get(argument.name)
            if value is True:
                found.append(str(node.target))
    return sorted(set(found))


def resolve_autocast(spec: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision.autocast`` on ``device``; CPU autocast is bfloat16 only."""
    if spec is None:
        return None
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[spec]
    if device.type == "cpu" and dtype != torch.bfloat16:
        raise ModelError(
            f"precision.autocast {spec!r} needs a CUDA (or MPS) device, but the audit runs on the CPU, "
            "where autocast supports bfloat16 only; use autocast: bfloat16 or null"
        )
    return dtype


@contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """Allow (or forbid) TF32 in CUDA matmuls and convolutions for the audit, then restore."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


@contextmanager
def audit_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters for the audit; the previous state is restored on exit.

    An exported graph is already an inference graph and refuses ``.eval()``; it is left as it is.
    """
    exported = is_exported_graph(model)
    training = {m: m.training for m in model.modules()} if not exported else {}
    requires_grad = {p: p.requires_grad for p in model.parameters()}
    try:
        if not exported:
            model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in requires_grad.items():
            p.requires_grad_(flag)
        for m, flag in training.items():
            m.training = flag


@dataclass(frozen=True)
class ModelHandle:
    """A model ready to be explained: on its device, with the explained output chosen.

    A model that returns a dict or a tuple names its class scores with ``output_key`` (a dict key)
    or ``output_index`` (a tuple index). ``output`` is then applied to the raw scores before a
    target column is taken: ``logit`` (as is), ``probability`` (softmax) or ``log_probability``.
    """

    module: nn.Module
    device: torch.device
    output: str = "logit"
    # Precision of gradient passes (None: full). Passes without autograd, whose outputs are
    # reported and checked (predictions, F(x), F(x')), always run in full precision.
    autocast: torch.dtype | None = None
    output_key: str | None = None
    output_index: int | None = None

    @property
    def exported(self) -> bool:
        return is_exported_graph(self.module)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The model's outputs for ``x``, transformed to the explained output, shape (B, C)."""
        if self.autocast is not None and torch.is_grad_enabled():
            with torch.autocast(self.device.type, dtype=self.autocast):
                raw = self.select(self.module(x))
            if raw.is_floating_point():
                raw = raw.to(x.dtype)  # softmax and the target's sum run in full precision
        else:
            raw = self.select(self.module(x))
        return self.finish(raw)

    def finish(self, raw: torch.Tensor) -> torch.Tensor:
        """Class scores from the model's selected raw output: checked, and transformed to the
        explained output (``output``)."""
        if not raw.is_floating_point():
            raise ModelError(
                f"the model returned {raw.dtype} outputs of shape {tuple(raw.shape)}, which cannot be "
                "differentiated (an argmax or class ids?); it must return floating-point class scores "
                "of shape (batch, classes)"
            )
        if raw.ndim != 2:
            raise ModelError(
                f"the model returned a tensor of shape {tuple(raw.shape)}; a classifier to audit "
                "must return class scores of shape (batch, classes)"
            )
        if self.output == "probability":
            return torch.softmax(raw, dim=1)
        if self.output == "log_probability":
            return torch.log_softmax(raw, dim=1)
        return raw

    def select(self, raw: object) -> torch.Tensor:
        """The class-score tensor in the model's raw output, picked by ``output_key``/``output_index``."""
        if isinstance(raw, Mapping):
            keys = [str(k) for k in raw]
            if self.output_key is None:
                raise ModelError(
                    f"the model returned {type(raw).__name__} with keys {keys}; set output_key in "
                    "the config to the key of its class scores"
                )
            if self.output_key not in raw:
                raise ModelError(
                    f"output_key {self.output_key!r} is not a key of the model's output; its keys: {keys}"
                )
            raw = raw[self.output_key]
        elif isinstance(raw, (tuple, list)):
            if self.output_index is None:
                raise ModelError(
                    f"the model returned {type(raw).__name__} of {len(raw)} items; set output_index "
                    f"in the config to the index of its class scores (0 to {len(raw) - 1})"
                )
            if self.output_index >= len(raw):
                raise ModelError(
                    f"output_index {self.output_index} is out of range: the model returned a "
                    f"{type(raw).__name__} of {len(raw)} items, so it must be 0 to {len(raw) - 1}"
                )
            raw = raw[self.output_index]
        elif self.output_key is not None or self.output_index is not None:
            option = "output_key" if self.output_key is not None else "output_index"
            raise ModelError(
                f"{option} is set, but the model returned a {type(raw).__name__}, not a "
                f"{'dict' if option == 'output_key' else 'tuple'}; drop {option} from the config"
            )
        if not isinstance(raw, torch.Tensor):
            raise ModelError(
                f"the model's class scores are a {type(raw).__name__}; a classifier to audit must "
                "return one tensor of class scores of shape (batch, classes)"
            )
        return raw

    def explained(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """F(x): the explained output of each sample's target class, shape (B,)."""
        return self.scores(x).gather(1, target.view(-1, 1)).squeeze(1)


def check_gradient_path(handle: ModelHandle, x: torch.Tensor, method: str) -> None:
    """Refuse, with a message, a model whose scores do not depend on its input through autograd.

    A gradient method on such a model (outputs detached, computed under ``torch.no_grad``, or
    rebuilt from an argmax) would otherwise stop on a bare autograd error, or explain nothing.
    """
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        scores = handle.scores(x)
        connected = scores.requires_grad and (
            torch.autograd.grad(scores.sum(), x, allow_unused=True)[0] is not None
        )
    if not connected:
        raise ModelError(
            f"method {method!r} needs gradients of the model's output with respect to its input, but "
            "the output is not connected to the input in the autograd graph (detached, computed "
            "under torch.no_grad, or rebuilt from an argmax); return scores computed from the input "
            "with autograd, or use a perturbation method (occlusion, feature_ablation, "
            "shapley_value_sampling, kernel_shap, lime)"
        )
