"""Each DSA family against hand-computed results, and its gradient."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from datadistill.augment import AUGMENTATIONS, DSA, DSAConfig, DSAParams


def params_for(family: str, groups: int = 1, **values: object) -> DSAParams:
    """Parameters for one family with some values set by hand."""
    params = DSA(DSAConfig(strategy=family, mode="multiple")).sample(
        groups, torch.Generator().manual_seed(0)
    )
    return replace(params, **values)  # type: ignore[arg-type]


def images(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_registry_has_the_six_families() -> None:
    assert AUGMENTATIONS.names() == ["color", "crop", "cutout", "flip", "rotate", "scale"]


def test_flip() -> None:
    x = images(2, 3, 1, 5, 5)
    out = AUGMENTATIONS.get("flip")(x, params_for("flip", 2, flip=torch.tensor([True, False])))
    torch.testing.assert_close(out[0], x[0].flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(out[1], x[1], rtol=0, atol=0)
    always = DSA(DSAConfig(strategy="flip", flip=1.0))
    assert torch.equal(always(x, always.sample(2, torch.Generator())), x.flip(-1))
    never = DSA(DSAConfig(strategy="flip", flip=0.0))
    assert torch.equal(never(x, never.sample(2, torch.Generator())), x)


def test_flip_gradient_is_the_mirrored_upstream_gradient() -> None:
    x = images(2, 2, 3, 4, 4).requires_grad_()
    w = images(2, 2, 3, 4, 4, seed=1)
    out = AUGMENTATIONS.get("flip")(x, params_for("flip", 2, flip=torch.tensor([True, False])))
    (out * w).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad[0], w[0].flip(-1))
    torch.testing.assert_close(x.grad[1], w[1])


def test_color_brightness_adds_a_constant() -> None:
    x = images(2, 2, 3, 4, 4)
    p = params_for(
        "color",
        2,
        brightness=torch.tensor([0.3, -0.2]),
        saturation=torch.ones(2),
        contrast=torch.ones(2),
    )
    out = AUGMENTATIONS.get("color")(x, p)
    torch.testing.assert_close(out[0], x[0] + 0.3)
    torch.testing.assert_close(out[1], x[1] - 0.2)


def test_color_matches_the_three_reference_steps() -> None:
    x = images(3, 2, 3, 5, 5)
    p = DSA(DSAConfig(strategy="color", mode="multiple")).sample(3, torch.Generator())
    b, s, c = (v.view(3, 1, 1, 1, 1) for v in (p.brightness, p.saturation, p.contrast))
    y = x + b
    m = y.mean(dim=2, keepdim=True)
    y = (y - m) * s + m
    m = y.mean(dim=(2, 3, 4), keepdim=True)
    y = (y - m) * c + m
    torch.testing.assert_close(AUGMENTATIONS.get("color")(x, p), y)
    gray = x[:, :, :1]  # one channel: saturation has no effect
    p1 = replace(p, saturation=torch.full((3,), 1.7))
    p2 = replace(p, saturation=torch.full((3,), 0.2))
    color = AUGMENTATIONS.get("color")
    torch.testing.assert_close(color(gray, p1), color(gray, p2))


def test_crop_is_a_zero_filled_integer_translation() -> None:
    # u -> shift: floor(u * (2s + 1)) - s, s = int(8 * 0.125 + 0.5) = 1
    x = images(3, 2, 1, 8, 8)
    u = torch.tensor([[0.5, 0.5], [0.0, 0.99], [0.9, 0.1]])  # shifts (0, 0), (-1, 1), (1, -1)
    out = AUGMENTATIONS.get("crop")(x, params_for("crop", 3, crop=u, crop_ratio=0.125))
    assert torch.equal(out[0], x[0])
    expected = torch.zeros_like(x[1])  # out[i, j] = x[i - 1, j + 1]
    expected[..., 1:, :-1] = x[1][..., :-1, 1:]
    assert torch.equal(out[1], expected)
    expected = torch.zeros_like(x[2])  # out[i, j] = x[i + 1, j - 1]
    expected[..., :-1, 1:] = x[2][..., 1:, :-1]
    assert torch.equal(out[2], expected)


def test_crop_gradient_is_the_mask_of_pixels_kept() -> None:
    x = images(1, 2, 1, 6, 6).requires_grad_()
    p = params_for("crop", 1, crop=torch.tensor([[0.0, 0.99]]), crop_ratio=0.2)  # s = 1
    AUGMENTATIONS.get("crop")(x, p).sum().backward()
    expected = torch.zeros(1, 2, 1, 6, 6)
    expected[..., :-1, 1:] = 1  # rows 0..4 and columns 1..5 move into the frame
    assert x.grad is not None and torch.equal(x.grad, expected)


def test_crop_shifts_are_uniform_on_the_reference_range() -> None:
    u = torch.linspace(0, 1 - 1e-7, 700)
    p = params_for("crop", 700, crop=torch.stack([u, u], 1), crop_ratio=0.125)
    x = torch.zeros(700, 1, 1, 32, 32)
    x[..., 16, 16] = 1  # a single bright pixel
    out = AUGMENTATIONS.get("crop")(x, p)[:, 0, 0]
    rows = out.flatten(1).argmax(1) // 32 - 16
    counts = torch.bincount(rows + 4)  # s = int(32 * 0.125 + 0.5) = 4 -> shifts -4..4
    assert rows.min() == -4 and rows.max() == 4
    assert counts.min() >= 700 // 9 - 1


def test_cutout_zeroes_a_square_as_the_reference() -> None:
    x = torch.ones(2, 3, 1, 8, 8)
    # side int(8 * 0.5 + 0.5) = 4, centre floor(u * (8 + 1 - 0)) - 2
    u = torch.tensor([[0.5, 0.5], [0.0, 0.99]])  # top-left (2, 2); (-2, 6) clipped
    out = AUGMENTATIONS.get("cutout")(x, params_for("cutout", 2, cutout=u, cutout_ratio=0.5))
    expected = torch.ones(2, 8, 8)
    expected[0, 2:6, 2:6] = 0
    expected[1, 0:2, 6:8] = 0
    for n in range(3):
        assert torch.equal(out[:, n, 0], expected)


def test_cutout_gradient_is_the_mask() -> None:
    x = images(1, 2, 3, 6, 6).requires_grad_()
    p = params_for("cutout", 1, cutout=torch.tensor([[0.5, 0.2]]), cutout_ratio=0.5)
    out = AUGMENTATIONS.get("cutout")(x, p)
    out.sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad, (out != 0).float())
    assert int((x.grad == 0).sum()) == 2 * 3 * 9  # a 3x3 square in every channel


def test_scale_and_rotate_identity() -> None:
    x = images(2, 3, 3, 7, 7)
    ident = AUGMENTATIONS.get("scale")(x, params_for("scale", 2, scale=torch.ones(2, 2)))
    torch.testing.assert_close(ident, x, atol=1e-5, rtol=1e-5)
    ident = AUGMENTATIONS.get("rotate")(x, params_for("rotate", 2, rotate=torch.zeros(2)))
    torch.testing.assert_close(ident, x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["scale", "rotate"])
def test_bf16_images_are_resampled_on_a_float32_grid(family: str) -> None:
    """A bf16 batch comes back in bf16, within bf16 rounding of the float32 warp (a bf16
    grid would misplace samples by up to a quarter pixel at 64 px)."""
    x = images(1, 2, 3, 64, 64)
    p = params_for(family, 1)
    ref = AUGMENTATIONS.get(family)(x.bfloat16().float(), p)
    out = AUGMENTATIONS.get(family)(x.bfloat16(), p)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.04, rtol=0.01)


def test_rotate_90_degrees_is_anticlockwise() -> None:
    x = images(1, 2, 1, 5, 5)
    p = params_for("rotate", 1, rotate=torch.tensor([math.pi / 2]))
    out = AUGMENTATIONS.get("rotate")(x, p)
    torch.testing.assert_close(out, torch.rot90(x, 1, (-2, -1)), atol=1e-5, rtol=1e-5)


def test_scale_samples_a_stretched_grid() -> None:
    # On a horizontal ramp in [-1, 1], scaling the grid by sx gives sx * ramp (0 outside).
    ramp = torch.linspace(-1, 1, 9).expand(9, 9).reshape(1, 1, 1, 9, 9)
    p = params_for("scale", 1, scale=torch.tensor([[0.5, 1.0]]))
    out = AUGMENTATIONS.get("scale")(ramp, p)
    torch.testing.assert_close(out, 0.5 * ramp, atol=1e-6, rtol=1e-6)
    p = params_for("scale", 1, scale=torch.tensor([[2.0, 1.0]]))
    out = AUGMENTATIONS.get("scale")(ramp, p)[0, 0, 0, 4]
    torch.testing.assert_close(out[2:7], 2 * ramp[0, 0, 0, 4, 2:7], atol=1e-6, rtol=1e-6)
    assert torch.equal(out[[0, 1, 7, 8]], torch.zeros(4))


@pytest.mark.parametrize("family", ["color", "scale", "rotate"])
def test_gradcheck_smooth_families(family: str) -> None:
    x = images(2, 2, 3, 5, 5, dtype=torch.float64).requires_grad_()
    p = DSA(DSAConfig(strategy=family, mode="multiple")).sample(2, torch.Generator())
    fn = AUGMENTATIONS.get(family)
    assert torch.autograd.gradcheck(lambda t: fn(t, p), (x,), fast_mode=True)


@pytest.mark.parametrize("family", AUGMENTATIONS.names())
def test_every_family_passes_a_nonzero_finite_gradient(family: str) -> None:
    x = images(3, 2, 3, 8, 8).requires_grad_()
    p = DSA(DSAConfig(strategy=family, mode="multiple")).sample(3, torch.Generator())
    (AUGMENTATIONS.get(family)(x, p) * images(3, 2, 3, 8, 8, seed=1)).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_crop_and_cutout_sizes_round_half_up_as_the_reference() -> None:
    """The reference's int(side * ratio + 0.5): MNIST's 28 px shift by up to 4 (3.5 rounds
    up), and a 9-px image loses a 5-px square (4.5 rounds up)."""
    x = torch.zeros(2, 1, 1, 28, 28)
    x[..., 14, 14] = 1
    u = torch.tensor([[0.0, 0.0], [1 - 1e-7, 1 - 1e-7]])  # the two extreme shifts
    out = AUGMENTATIONS.get("crop")(x, params_for("crop", 2, crop=u, crop_ratio=0.125))
    moved = out[:, 0, 0].flatten(1).argmax(1)
    assert (moved // 28 - 14).tolist() == [4, -4] and (moved % 28 - 14).tolist() == [4, -4]
    ones = torch.ones(1, 1, 1, 9, 9)
    p = params_for("cutout", 1, cutout=torch.tensor([[0.5, 0.5]]), cutout_ratio=0.5)
    assert int((AUGMENTATIONS.get("cutout")(ones, p) == 0).sum()) == 25


def test_sampled_scale_and_rotation_span_the_papers_ranges() -> None:
    """Scale factors uniform on [1 / 1.2, 1.2] and angles on [-15, 15] degrees (DSA's
    defaults), each end reached."""
    p = DSA(DSAConfig()).sample(20000, torch.Generator().manual_seed(0))
    lo, hi = float(p.scale.min()), float(p.scale.max())
    assert 1 / 1.2 <= lo < 1 / 1.2 + 0.005 and 1.2 - 0.005 < hi <= 1.2
    degrees = p.rotate * 180 / math.pi
    assert -15 <= float(degrees.min()) < -14.9 and 14.9 < float(degrees.max()) <= 15


def test_a_dataset_that_forbids_mirroring_gets_no_flip() -> None:
    assert "flip" not in DSAConfig().for_dataset(allow_flip=False).families
    assert "flip" in DSAConfig().for_dataset(allow_flip=True).families
