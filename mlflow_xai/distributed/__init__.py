"""The Ray executor (``distributed.engine: ray``): a pool of Ray actors attributes the batches.

May import: ``engine``, ``config``, ``probe``, ``report``. Ray itself is imported only when used.
"""

from mlflow_xai.distributed.ray import (
    BatchWorker,
    RayExecutor,
    audit_on_ray,
    batch_result,
    decode_batch,
    encode_batch,
    import_ray,
    quiet_ray_data_console,
    ray_cluster,
    result_columns,
)

__all__ = [
    "RayExecutor",
    "BatchWorker",
    "audit_on_ray",
    "batch_result",
    "decode_batch",
    "encode_batch",
    "import_ray",
    "quiet_ray_data_console",
    "ray_cluster",
    "result_columns",
]
