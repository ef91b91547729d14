"""The model as the audit sees it: device, audit (eval) mode, exported graphs, and the explained output.

May import: ``errors``.
"""

from mlflow_xai.model.handle import (
    HOOK_ADVICE,
    ModelHandle,
    audit_mode,
    check_gradient_path,
    is_exported_graph,
    resolve_autocast,
    resolve_device,
    tf32_mode,
    training_mode_ops,
)

__all__ = [
    "HOOK_ADVICE",
    "ModelHandle",
    "audit_mode",
    "check_gradient_path",
    "is_exported_graph",
    "resolve_autocast",
    "resolve_device",
    "tf32_mode",
    "training_mode_ops",
]
