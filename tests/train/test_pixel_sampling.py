"""Pixel sampling near the object (`taichi_sdf.train.pixel_sampling`), shared by IDR and DVR single-view."""

import pytest
import torch

from taichi_sdf.train.pixel_sampling import draw_pixels, object_pixel_lists


def test_object_pixel_lists_grow_each_mask_by_the_margin():
    masks = torch.zeros(2, 8, 10, dtype=torch.bool)
    masks[0, 3, 4] = True
    masks[1, 0, 0] = True
    near = object_pixel_lists(masks, margin=1)
    assert sorted(near[0].tolist()) == [r * 10 + c for r in (2, 3, 4) for c in (3, 4, 5)]
    assert sorted(near[1].tolist()) == [0, 1, 10, 11]  # clipped at the image border
    assert object_pixel_lists(masks, margin=0)[0].tolist() == [34]


def test_draw_pixels_without_a_share_is_the_uniform_draw():
    near = torch.tensor([5, 6, 7])
    a = draw_pixels(100, 50, near, 0.0, torch.Generator().manual_seed(3))
    b = draw_pixels(100, 50, None, 0.5, torch.Generator().manual_seed(3))
    c = torch.randint(100, (50,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, c) and torch.equal(b, c)


def test_draw_pixels_puts_its_share_near_the_object_and_the_rest_uniform():
    near = torch.tensor([5, 6, 7])
    flat = draw_pixels(10_000, 400, near, 0.75, torch.Generator().manual_seed(0))
    assert flat.shape == (400,) and flat.dtype == torch.int64
    assert set(flat[:300].tolist()) <= {5, 6, 7}
    assert (~torch.isin(flat[300:], near)).sum() > 90  # the uniform rest: almost never one of 3 pixels of 10^4
    empty = draw_pixels(10_000, 400, near[:0], 0.75, torch.Generator().manual_seed(0))  # no mask: all uniform
    assert torch.equal(empty, torch.randint(10_000, (400,), generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_draw_pixels_names_a_share_outside_0_1(bad):
    with pytest.raises(ValueError, match="fraction"):
        draw_pixels(10, 5, None, bad, torch.Generator())


def test_object_pixel_lists_names_bad_masks_and_margins():
    with pytest.raises(ValueError, match="masks"):
        object_pixel_lists(torch.zeros(4, 4, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match="margin"):
        object_pixel_lists(torch.zeros(1, 4, 4, dtype=torch.bool), -1)
