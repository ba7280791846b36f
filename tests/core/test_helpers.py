"""The shared twin-comparison helper must not let a broken op through."""

import pytest
import torch

from tests.helpers import assert_matches_twin


def _twin(x):
    return x * 2.0, (x * x).sum()


def test_matching_op_passes():
    x = torch.rand(5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    assert_matches_twin(lambda x: (x * 2.0, (x * x).sum()), _twin, [x], atol=1e-12)


def test_detached_output_is_rejected():
    """A kernel op that forgets to attach an output to autograd: same values, but its VJP would be
    skipped if the helper only looked at the op's own outputs."""
    x = torch.rand(5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()

    def detached(x):
        return x * 2.0, (x * x).sum().detach()

    with pytest.raises(AssertionError, match="output 1: requires_grad is False for the op but True for the twin"):
        assert_matches_twin(detached, _twin, [x], atol=1e-12)


def test_wrong_gradient_is_rejected():
    x = torch.rand(5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()

    def wrong(x):
        y = (x * x).sum()
        return x * 2.0, y + (x.detach() - x).sum() * 0.5  # same value, gradient off by 0.5

    with pytest.raises(AssertionError):
        assert_matches_twin(wrong, _twin, [x], atol=1e-12)
