"""The probe set: ``ProbeSet`` (``probe_set``) and the loaders that turn arrays, files, image folders,
datasets and data loaders into one (``loaders``): probe files read safely (``files``), samples
streamed one at a time (``items``), raw data made model input (``preprocess``), and memory kept
bounded (``memory``: released pages, spill files).

May import: ``config``, ``errors``.
"""

from mlflow_xai.probe.files import NPZ_ARRAYS, npz_member, open_npz, read_npy, unreadable
from mlflow_xai.probe.memory import SpillArray, SpillWriter, keep_alive, release_pages
from mlflow_xai.probe.probe_set import (
    CHUNK_ROWS,
    CLASS_INDEX,
    FOLDER_ORDER,
    LABEL_SOURCES,
    SAMPLINGS,
    ProbeBatch,
    ProbeSet,
    load_npz,
    stratified_index,
)

__all__ = [
    "CHUNK_ROWS",
    "CLASS_INDEX",
    "FOLDER_ORDER",
    "LABEL_SOURCES",
    "NPZ_ARRAYS",
    "ProbeBatch",
    "ProbeSet",
    "SAMPLINGS",
    "SpillArray",
    "SpillWriter",
    "keep_alive",
    "load_npz",
    "npz_member",
    "open_npz",
    "read_npy",
    "release_pages",
    "stratified_index",
    "unreadable",
]
