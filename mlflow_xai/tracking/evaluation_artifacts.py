"""The evaluation artifacts the evaluator returns to MLflow: masks as ``.npz``, files as bytes.
"""

from __future__ import annotations

from mlflow.models.evaluation.base import EvaluationArtifact


class NpzEvaluationArtifact(EvaluationArtifact):
    """An ``.npz`` file (e.g. ``xai/<method>/masks.npz``); its content is a dict of arrays.

    MLflow's ``NumpyEvaluationArtifact`` is for ``.npy``: on an ``.npz`` it would hold an open
    ``NpzFile`` and fail to save it again. Defined here, not in the heavy half, so that
    ``EvaluationResult.load`` can import it without torch.
    """

    def _load_content_from_file(self, local_artifact_path):
        import numpy as np

        with np.load(local_artifact_path, allow_pickle=False) as archive:
            self._content = {name: archive[name] for name in archive.files}
        return self._content

    def _save(self, output_artifact_path):
        import numpy as np

        # ``content``, not ``_content``: masks are not loaded up front, so saving downloads them.
        with open(output_artifact_path, "wb") as fh:  # a file object: savez adds no ".npz" suffix
            np.savez_compressed(fh, **self.content)


class BytesEvaluationArtifact(EvaluationArtifact):
    """A file of a kind MLflow has no artifact class for; its content is the raw bytes."""

    def _load_content_from_file(self, local_artifact_path):
        with open(local_artifact_path, "rb") as fh:
            self._content = fh.read()
        return self._content

    def _save(self, output_artifact_path):
        with open(output_artifact_path, "wb") as fh:
            fh.write(self.content)
