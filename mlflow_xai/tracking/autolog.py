"""``mlflow_xai.autolog()``: every PyTorch model logged with ``mlflow.pytorch.log_model`` is audited
into the run it was logged to, right after it is logged.

It hooks in where MLflow's own integrations do: ``mlflow.pytorch.log_model`` is wrapped, so a model
logged by a plain training loop and one logged by ``mlflow.pytorch.autolog()`` at the end of a
Lightning fit are both audited. ``autolog(disable=True)`` puts the original back.

An audit that fails never breaks the training that logged the model, unless ``strict=True``: the
error becomes the run's ``xai.autolog_error`` tag and a warning (none with ``silent=True``). The
config is validated when ``autolog`` is called; the probe is read at the first audit, so a probe
that cannot be read is such an error.

A run that logs several models (checkpoints) keeps every audit's metrics: each is logged with
the model's id and with a step, ``log_model``'s own ``step`` when it is given and otherwise the
number of models audited in the run before it, so the run page plots how the attribution metrics
moved over training. The ``xai/`` artifacts are those of the latest model; its tag
``xai.autolog_model_id`` says which.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

from mlflow_xai.config.loading import load_config

_log = logging.getLogger(__name__)


@dataclass
class _Settings:
    probe: Any
    config: Any
    silent: bool
    strict: bool


class _State:
    original: Any = None  # mlflow.pytorch.log_model before autolog wrapped it
    settings: _Settings | None = None
    audited: Counter[str] = Counter()  # models audited per run id, for the default step


def autolog(
    probe: Any = None,
    config: Any = None,
    *,
    disable: bool = False,
    silent: bool = False,
    strict: bool = False,
) -> None:
    """Audit every model logged with ``mlflow.pytorch.log_model`` from now on.

    ``probe`` is anything ``mlflow_xai.audit`` takes (a path, an array, a ``ProbeSet``, ...) and
    ``config`` an audit config (a YAML path, a mapping, an ``AuditConfig`` or None for the
    defaults). Calling it again replaces the settings; ``disable=True`` stops auditing.
    """
    import mlflow.pytorch

    if disable:
        if _State.original is not None:
            mlflow.pytorch.log_model = _State.original
        _State.original, _State.settings = None, None
        return
    if probe is None:
        from mlflow_xai.errors import ConfigError

        raise ConfigError(
            "mlflow_xai.autolog needs a probe: the held-out samples every logged model is audited on"
        )
    cfg = config if hasattr(config, "methods") else load_config(config)  # a bad config fails here
    _State.settings = _Settings(probe, cfg, silent, strict)
    if _State.original is None:
        _State.original = mlflow.pytorch.log_model
        mlflow.pytorch.log_model = _wrap(_State.original)


def _wrap(original: Any) -> Any:
    @functools.wraps(original)
    def log_model(pytorch_model: Any, *args: Any, **kwargs: Any) -> Any:
        info = original(pytorch_model, *args, **kwargs)
        settings = _State.settings
        if settings is not None:
            _audit_logged(pytorch_model, info, kwargs.get("step"), settings)
        return info

    log_model.__mlflow_xai_autolog__ = True  # type: ignore[attr-defined]
    return log_model


def _audit_logged(model: Any, info: Any, step: int | None, settings: _Settings) -> None:
    """Audit ``model`` (just logged as ``info``) into its run; errors become a tag and a warning."""
    from mlflow import MlflowClient

    from mlflow_xai.engine.run import audit
    from mlflow_xai.tracking.log import log_report

    run_id = info.run_id
    client = MlflowClient()
    try:
        report = audit(model, settings.probe, settings.config)
        count = _State.audited[run_id]
        log_report(
            report,
            run_id,
            client=client,
            step=count if not step else int(step),
            model_id=getattr(info, "model_id", None),
            extra_tags={"xai.autolog_model_id": str(getattr(info, "model_id", "") or info.model_uri)},
        )
        _State.audited[run_id] += 1
    except Exception as exc:
        if settings.strict:
            raise
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        client.set_tag(run_id, "xai.autolog_error", reason[:4000])
        if not settings.silent:
            warnings.warn(
                f"mlflow-xai autolog: the audit of {info.model_uri} failed and was skipped ({reason}); "
                "training goes on. Pass strict=True to make it fail instead",
                stacklevel=3,
            )
