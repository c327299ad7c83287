"""The six DSA families as pure functions of (G, N, C, H, W) images and :class:`DSAParams`.

Group g's parameters apply to all N images of group g (Siamese augmentation). Every
function is differentiable with respect to the images and vectorised over groups; the maths
follows the reference DSA code (Zhao & Bilen, ICML 2021).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from datadistill.augment.params import DSAParams
from datadistill.registry import Registry

Augmentation = Callable[[Tensor, DSAParams], Tensor]

AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")
"""The DSA families: ``fn(x (G, N, C, H, W), params) -> (G, N, C, H, W)``."""


def _per_group(values: Tensor, x: Tensor) -> Tensor:
    """(G,) -> (G, 1, 1, 1, 1) in x's dtype and device, to broadcast over (G, N, C, H, W)."""
    return values.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1, 1)


@AUGMENTATIONS.register("color")
def color(x: Tensor, params: DSAParams) -> Tensor:
    """Brightness, then saturation, then contrast (the reference's order).

    brightness: x1 = x + b; saturation: x2 = (x1 - mean_C x1) * s + mean_C x1; contrast:
    x3 = (x2 - mean_CHW x2) * c + mean_CHW x2, means taken per image. Expanding the three
    steps (the saturation term has zero mean over C) gives one fused pass,
    x3 = c s x + c (1 - s) mean_C x + (1 - c) mean_CHW x + b, equal up to rounding.
    """
    b = _per_group(params.brightness, x)
    s = _per_group(params.saturation, x)
    c = _per_group(params.contrast, x)
    offset = (1 - c) * x.mean(dim=(2, 3, 4), keepdim=True) + b  # (G, N, 1, 1, 1)
    if x.shape[2] == 1:  # one channel: saturation is the identity (mean_C x = x)
        return torch.addcmul(offset, x, c)
    mean_c = x.mean(dim=2, keepdim=True)  # (G, N, 1, H, W)
    return torch.addcmul(offset, x, c * s) + c * (1 - s) * mean_c


def _integer(u: Tensor, n: int) -> Tensor:
    """U[0, 1) draws -> integers uniform on {0, ..., n - 1} (int64, same shape)."""
    return (u.to(torch.float64) * n).floor().long().clamp_(0, n - 1)


@AUGMENTATIONS.register("crop")
def crop(x: Tensor, params: DSAParams) -> Tensor:
    """Translate by integer (dy, dx) in [-s, s]^2, s = int(side * ratio + 0.5), zero fill.

    Implemented as one gather from the 1-pixel zero-padded images (as the reference), so the
    gradient with respect to x is the inverse shift of the output gradient.
    """
    g, n, c, h, w = x.shape
    sh, sw = int(h * params.crop_ratio + 0.5), int(w * params.crop_ratio + 0.5)
    u = params.crop.to(x.device)
    dy = _integer(u[:, 0], 2 * sh + 1) - sh  # (G,)
    dx = _integer(u[:, 1], 2 * sw + 1) - sw
    rows = (torch.arange(h, device=x.device) + dy[:, None] + 1).clamp(0, h + 1)  # (G, H)
    cols = (torch.arange(w, device=x.device) + dx[:, None] + 1).clamp(0, w + 1)  # (G, W)
    index = (rows[:, :, None] * (w + 2) + cols[:, None, :]).view(g, 1, h * w)
    padded = F.pad(x.reshape(g, n * c, h, w), (1, 1, 1, 1)).flatten(2)  # (G, NC, (H+2)(W+2))
    out = padded.gather(2, index.expand(g, n * c, h * w))
    return out.view(g, n, c, h, w)


@AUGMENTATIONS.register("cutout")
def cutout(x: Tensor, params: DSAParams) -> Tensor:
    """Zero a square of side int(side * ratio + 0.5) per group.

    As the reference: the centre is uniform on {0, ..., side - (side_cut % 2)} and the
    square [centre - side_cut // 2, centre - side_cut // 2 + side_cut) is clipped to the
    image.
    """
    h, w = x.shape[-2:]
    ch, cw = int(h * params.cutout_ratio + 0.5), int(w * params.cutout_ratio + 0.5)
    u = params.cutout.to(x.device)
    top = _integer(u[:, 0], h + 1 - ch % 2) - ch // 2  # (G,)
    left = _integer(u[:, 1], w + 1 - cw % 2) - cw // 2
    r = torch.arange(h, device=x.device)
    q = torch.arange(w, device=x.device)
    in_rows = (r >= top[:, None]) & (r < top[:, None] + ch)  # (G, H)
    in_cols = (q >= left[:, None]) & (q < left[:, None] + cw)  # (G, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (G, H, W)
    return x * keep.to(x.dtype)[:, None, None]


@AUGMENTATIONS.register("flip")
def flip(x: Tensor, params: DSAParams) -> Tensor:
    """Mirror left-right the groups whose ``flip`` is true."""
    mask = params.flip.to(x.device).view(-1, 1, 1, 1, 1)
    return torch.where(mask, x.flip(-1), x)


def _warp(x: Tensor, theta: Tensor) -> Tensor:
    """Bilinear resampling of (G, N, C, H, W) on the affine grid of theta (G, 2, 3).

    The grid is built once per group; the N images of a group are folded into channels so
    ``grid_sample`` reuses it for all of them (zeros outside, align_corners=True as the
    reference). Half-precision images are resampled in float32: bf16 grid coordinates
    near the border are off by a quarter pixel at 64 px, and even the identity warp would
    blur them.
    """
    g, n, c, h, w = x.shape
    low = x.dtype in (torch.bfloat16, torch.float16)
    xs = x.float() if low else x
    theta = theta.to(device=x.device, dtype=xs.dtype)
    grid = F.affine_grid(theta, [g, 1, h, w], align_corners=True)  # (G, H, W, 2)
    out = F.grid_sample(
        xs.reshape(g, n * c, h, w),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    return out.view(g, n, c, h, w).to(x.dtype)


@AUGMENTATIONS.register("scale")
def scale(x: Tensor, params: DSAParams) -> Tensor:
    """Resample on the grid [[sx, 0, 0], [0, sy, 0]] (sx, sy > 1 zoom out)."""
    s = params.scale.to(torch.float64)
    theta = torch.zeros(s.shape[0], 2, 3, dtype=torch.float64, device=s.device)
    theta[:, 0, 0] = s[:, 0]
    theta[:, 1, 1] = s[:, 1]
    return _warp(x, theta)


@AUGMENTATIONS.register("rotate")
def rotate(x: Tensor, params: DSAParams) -> Tensor:
    """Resample on the grid [[cos a, -sin a, 0], [sin a, cos a, 0]] (the reference's sign)."""
    a = params.rotate.to(torch.float64)
    cos, sin = torch.cos(a), torch.sin(a)
    theta = torch.zeros(a.shape[0], 2, 3, dtype=torch.float64, device=a.device)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    return _warp(x, theta)
