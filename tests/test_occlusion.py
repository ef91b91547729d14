"""Our occlusion equals Captum's on the same windows, for any chunking of windows per pass."""

from __future__ import annotations

import pytest
import torch
from captum.attr import Occlusion as CaptumOcclusion

from mlflow_xai.attribution.methods.occlusion import _occluded, _positions, occlusion
from mlflow_xai.datasets.cnn import ShapesCNN


@pytest.mark.parametrize(
    ("window", "strides"),
    [((3, 8, 8), (3, 4, 4)), ((1, 5, 5), (1, 3, 3)), ((3, 7, 7), (3, 5, 5)), ((2, 16, 3), (1, 16, 2))],
)
@pytest.mark.parametrize("per_pass", [1, 7, 1000])
def test_matches_captum(window, strides, per_pass):
    torch.manual_seed(0)
    model = ShapesCNN(width=4).double().eval()
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    target = torch.tensor([0, 2, 3])
    expected = CaptumOcclusion(model).attribute(
        x, sliding_window_shapes=window, strides=strides, baselines=0.25, target=target
    )
    got = occlusion(
        model, x, target, window=window, strides=strides, baseline=0.25, windows_per_pass=per_pass
    )
    # Captum divides in float32 at the end; ours stays in the input's float64.
    torch.testing.assert_close(got, expected.double(), rtol=1e-6, atol=1e-9)


def test_windows_cover_every_feature_with_the_last_one_clipped():
    """Window starts as Captum places them, ceil((size - w) / s) + 1 per axis; the last window on an
    axis that the stride does not fit is clipped at the edge (features 8 and 9, not 8 to 11)."""
    assert _positions(10, 4, 3) == [0, 3, 6]
    assert _positions(10, 4, 4) == [0, 4, 8]
    x = torch.ones(1, 10, dtype=torch.float64)
    occluded = _occluded(x, torch.tensor([[0], [4], [8]]), (4,), 0.0)
    covered = [torch.nonzero(row == 0).flatten().tolist() for row in occluded]
    assert covered == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_linear_model_known_answer():
    """F(x) = w . x with baseline 0 and 1-wide windows: the drop at feature i is w_i x_i."""
    w = torch.tensor([[1.0, -2.0, 3.0, 0.5]], dtype=torch.float64)
    model = torch.nn.Linear(4, 1, bias=False).double()
    model.weight.data = w
    x = torch.tensor([[2.0, 1.0, -1.0, 4.0]], dtype=torch.float64)
    got = occlusion(model, x, torch.tensor([0]), window=(1,), strides=(1,), baseline=0.0, windows_per_pass=2)
    torch.testing.assert_close(got, w * x)
