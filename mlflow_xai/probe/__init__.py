"""The probe set: ``ProbeSet`` (``probe_set``) and the loaders that turn arrays, files, image folders,
datasets and data loaders into one, preprocessed (``loaders``).

May import: ``config``, ``errors``.
"""

from mlflow_xai.probe.probe_set import (
    CHUNK_ROWS,
    CLASS_INDEX,
    FOLDER_ORDER,
    LABEL_SOURCES,
    NPZ_ARRAYS,
    SAMPLINGS,
    ProbeBatch,
    ProbeSet,
    SpillArray,
    SpillWriter,
    keep_alive,
    load_npz,
    npz_member,
    open_npz,
    read_npy,
    release_pages,
    stratified_index,
    unreadable,
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
