"""Small data sets generated on the fly, so examples and tests never download anything, and the
example CNN they train (``cnn``). May import: nothing of the package; torch and numpy only.
"""

from mlflow_xai.datasets.shapes import SHAPE_CLASSES, ShapesData, make_shapes

__all__ = ["SHAPE_CLASSES", "ShapesData", "make_shapes"]
