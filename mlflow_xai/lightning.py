"""``XaiAudit``: a Lightning callback that audits the model being trained, into the run its
``MLFlowLogger`` logs to (``pip install 'mlflow-xai[lightning]'``).

At the end of ``fit`` and, with ``every_n_epochs``, after every N-th validation epoch, the module is
audited on the probe set and the report is logged to the logger's run with the epoch as the step,
so the run page shows how the attribution metrics moved over training. Without an ``MLFlowLogger``
the active MLflow run is used. The audit puts the module in eval mode and back, on the config's
device and back. An audit that fails is a tag (``xai.autolog_error``) and a warning, unless
``strict=True``; it never stops training otherwise.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytorch_lightning as pl
import torch

from mlflow_xai.config.loading import load_config


class XaiAudit(pl.Callback):
    def __init__(
        self, probe: Any, config: Any = None, *, every_n_epochs: int | None = None, strict: bool = False
    ) -> None:
        if every_n_epochs is not None and every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1 or None, got {every_n_epochs}")
        self.probe = probe
        self.config = config if hasattr(config, "methods") else load_config(config)
        self.every_n_epochs = every_n_epochs
        self.strict = strict
        self.audited_steps: list[int] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs is None or trainer.sanity_checking:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._audit(trainer, pl_module, int(trainer.current_epoch))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The epoch counter has moved past the last epoch trained; that epoch may be audited already.
        last = max(int(trainer.current_epoch) - 1, 0)
        if last not in self.audited_steps:
            self._audit(trainer, pl_module, last)

    def _audit(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        from mlflow_xai.engine.run import audit
        from mlflow_xai.tracking.log import client_for, log_report

        run_id, tracking_uri = _logger_run(trainer)
        client = client_for(tracking_uri)
        try:
            # Validation hooks run under inference mode and no_grad; gradient methods need neither.
            with torch.inference_mode(False), torch.enable_grad():
                report = audit(pl_module, self.probe, self.config)
            log_report(report, run_id, client=client, step=step)
            self.audited_steps.append(step)
        except Exception as exc:
            if self.strict:
                raise
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            client.set_tag(run_id, "xai.autolog_error", reason[:4000])
            warnings.warn(
                f"mlflow-xai: the audit at epoch {step} failed and was skipped ({reason})", stacklevel=2
            )


def _logger_run(trainer: pl.Trainer) -> tuple[str, str | None]:
    """The run id and tracking URI of the trainer's MLFlowLogger, else of the active MLflow run."""
    from pytorch_lightning.loggers import MLFlowLogger

    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            return logger.run_id, getattr(logger, "_tracking_uri", None)
    from mlflow_xai.tracking.log import active_run_id

    run_id = active_run_id()
    if run_id is None:
        raise RuntimeError(
            "XaiAudit logs to the run of the trainer's MLFlowLogger or to the active MLflow run; the "
            "trainer has no MLFlowLogger and no run is active"
        )
    return run_id, None
