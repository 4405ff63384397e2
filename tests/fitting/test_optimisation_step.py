"""The optimisation step shared by per-subject fits and multi-subject training."""

import pytest
import torch

from shdeconv.fitting import optimisation_step


def test_step_clips_the_gradient_and_moves_the_parameters():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = torch.optim.SGD([w], lr=1.0)
    value = optimisation_step((w * torch.tensor([30.0, 40.0])).sum(), [w], opt, grad_clip=1.0, where="step 1")
    assert value == pytest.approx(250.0)
    # gradient (30, 40) has norm 50, clipped to 1: a step of (0.6, 0.8)
    assert torch.allclose(w.detach(), torch.tensor([2.4, 3.2]))


def test_a_non_finite_loss_names_where_it_happened():
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    with pytest.raises(FloatingPointError, match="iteration 7.*--lr"):
        optimisation_step(w.sum() * float("nan"), [w], opt, grad_clip=0.0, where="iteration 7")
