"""Building blocks shared by the architectures: norms, activations, pooling, shape arithmetic.

The spatial size of every feature map is tracked analytically while a network is built, so
that flattened feature sizes, LayerNorm shapes and the small-image adaptations are known at
construction time (no dummy forward pass, and construction works on the meta device).
"""

from __future__ import annotations

from torch import nn

from datadistill.models._validate import check_choice

NORMS = ("instancenorm", "batchnorm", "layernorm", "none")
ACTIVATIONS = ("relu", "sigmoid", "leakyrelu")
POOLINGS = ("avgpool", "maxpool", "none")

HW = tuple[int, int]


def make_norm(kind: str, channels: int, hw: HW) -> nn.Module | None:
    """A normalisation layer for (B, ``channels``, H, W) maps, as in the DC / DSA / DM code.

    ``instancenorm`` is ``GroupNorm(C, C)`` (one group per channel, affine): mathematically
    instance norm with a per-channel affine, and on CPU about 1.7x faster than
    ``InstanceNorm2d(affine=True)`` in eager mode. ``layernorm`` is ``LayerNorm([C, H, W])``
    with an element-wise affine, as the reference code does. ``none`` returns ``None``.
    """
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind == "layernorm":
        return nn.LayerNorm([channels, hw[0], hw[1]], elementwise_affine=True)
    if kind == "none":
        return None
    raise AssertionError(f"unvalidated norm {kind!r}")


def make_act(kind: str) -> nn.Module:
    """ReLU, sigmoid or leaky ReLU (slope 0.01, the reference default).

    ReLU and leaky ReLU are in place, as in the reference: they always follow a conv or a
    norm whose backward does not need its output, and on CPU the in-place version is ~6x
    faster than allocating a new (B, C, H, W) map, which dominates at DM batch sizes.
    """
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01, inplace=True)
    raise AssertionError(f"unvalidated activation {kind!r}")


def conv_out(hw: HW, kernel: int, stride: int = 1, padding: int = 0) -> HW:
    """Spatial size after a square convolution / pooling window."""
    h, w = hw
    return ((h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1)


def can_halve(hw: HW, more_follow: bool) -> bool:
    """Whether a 2x2 / stride-2 downsampling step is kept for a map of size ``hw``.

    The reference architectures assume 28-32 px inputs. On smaller images a step is skipped
    when it would leave no pixel, or a map smaller than 2x2 that further layers still
    process (instance norm of a 1x1 map is constant, so the input would be ignored). The
    rule never fires for the sizes the reference code was written for (28, 32, 64, 128 px
    with the default depths).
    """
    h, w = hw[0] // 2, hw[1] // 2
    if min(h, w) < 1:
        return False
    return not (more_follow and min(h, w) < 2)


def make_pool(kind: str) -> nn.Module:
    """2x2 / stride-2 average or max pooling."""
    if kind == "avgpool":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if kind == "maxpool":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    raise AssertionError(f"unvalidated pooling {kind!r}")


def mnist_padding(channels: int, hw: HW) -> bool:
    """Whether the reference "MNIST trick" applies: 1-channel 28x28 input.

    The DC / DSA / DM reference networks pad the first convolution of 1-channel inputs more
    (ConvNet: 3 instead of 1) so that 28 px digits are processed like 32 px images. The
    reference applies it to every 1-channel input, but only 28 px digit sets are 1-channel
    there, so we apply it to exactly that case.
    """
    return channels == 1 and hw == (28, 28)


def check_norm(value: object, owner: str, choices: tuple[str, ...] = NORMS) -> str:
    return check_choice(value, choices, "norm", owner)
