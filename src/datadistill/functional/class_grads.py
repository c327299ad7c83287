"""Per-class gradients from ONE forward and ONE backward pass over all classes (ConvNet family).

Gradient matching needs, for every class c, the gradient of that class's loss with respect
to the same network weights theta. ``vmap`` over classes (:mod:`datadistill.functional.grads`)
is exact but lowers convolutions to grouped convolutions, which oneDNN runs several times
slower than plain ones on CPU. Here the classes share every activation computation:

* each weight enters the graph as K equal per-class copies ``theta_k`` (shape (K, ...));
* a convolution runs once on all K * B images with ``theta_k[0]`` (:class:`_ClassConv2d`);
  its backward computes the input gradient for the whole batch at once and the weight
  gradient once per class slice, which is exactly d loss_c / d theta for class c;
* affine parameters of the norms and the final linear layer act per class through
  broadcasting / ``bmm`` on a (K, B, ...) view, so autograd returns per-class gradients
  without any custom code.

So the per-class gradients come from one ``autograd.grad`` call on the sum of the class
losses. Everything stays differentiable with respect to the images (``create_graph=True``
is supported and tested; DC itself uses this path for its real side, without a graph).

Supported: :class:`~datadistill.models.convnet.ConvNet` with any norm (batch norm in eval
mode), activation and pooling. :func:`class_grads` returns ``None`` for anything else, and
callers fall back to ``vmap``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datadistill.models.convnet import ConvNet

_PARAMLESS = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.AvgPool2d,
    nn.MaxPool2d,
    nn.Identity,
    nn.Flatten,
)
_NORMS = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d)


class _ClassConv2d(torch.autograd.Function):
    """conv2d of (K*B, I, H, W) images with per-class weight copies (K, O, I, kh, kw).

    Forward uses copy 0 for the whole batch (all copies are equal). Backward returns the
    input gradient of the whole batch and, for copy c, the weight gradient of slice c only.
    Under autocast the convolution runs in the autocast dtype, as ``F.conv2d`` would, and
    the gradients come back in the dtypes of the inputs.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, w_k: Tensor, b_k: Tensor | None, stride: Any, padding: Any
    ) -> Tensor:
        device = x.device.type
        cast = torch.is_autocast_enabled(device) and x.dtype != torch.float64
        dt = torch.get_autocast_dtype(device) if cast else x.dtype
        # the inputs themselves are saved (casts are redone in backward), so that a
        # create_graph backward differentiates through them to x and w_k
        ctx.save_for_backward(x, w_k)
        ctx.dt, ctx.stride, ctx.padding = dt, stride, padding
        ctx.b_dtype = None if b_k is None else b_k.dtype
        b = None if b_k is None else b_k[0].to(dt)
        with torch.autocast(device, enabled=False):
            return F.conv2d(x.to(dt), w_k[0].to(dt), b, stride, padding)

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x_in, w_k = ctx.saved_tensors
        k, dt = w_k.shape[0], ctx.dt
        x, w, dy = x_in.to(dt), w_k[0].to(dt), dy.to(dt)  # no-ops without autocast
        args = (ctx.stride, ctx.padding, [1, 1], False, [0, 0], 1)
        dx = None
        if ctx.needs_input_grad[0]:
            dx = torch.ops.aten.convolution_backward(dy, x, w, None, *args, [True, False, False])[0]
            dx = dx.to(x_in.dtype)
        dys = dy.unflatten(0, (k, -1))
        if few_input_channels(w):
            dw = im2col_weight_grads(dy, x, w.shape, ctx.stride, ctx.padding, k)
        else:
            dxs = x.unflatten(0, (k, -1))
            dw = torch.stack(
                [
                    torch.ops.aten.convolution_backward(
                        dys[c], dxs[c], w, None, *args, [False, True, False]
                    )[1]
                    for c in range(k)
                ]
            )
        db = None if ctx.b_dtype is None else dys.sum(dim=(1, 3, 4), dtype=ctx.b_dtype)
        return dx, dw.to(w_k.dtype), db, None, None


# A convolution whose input has at most this many values per output position (C * kh * kw)
# gets its weight gradient from im2col + one matrix product on CPU: a 3x3 stem on 1 or 3
# channels. oneDNN's weight-gradient kernel runs such layers at a few GFLOP/s (NOTES.md,
# stop 14).
FEW_INPUTS = 27


def few_input_channels(w: Tensor) -> bool:
    """Whether a (O, C, kh, kw) convolution weight takes the im2col weight-gradient path
    (on CPU only: it works around oneDNN; GPU libraries have their own kernels)."""
    return w.device.type == "cpu" and w.shape[1] * w.shape[2] * w.shape[3] <= FEW_INPUTS


def im2col_weight_grads(
    dy: Tensor, x: Tensor, shape: Any, stride: Any, padding: Any, k: int = 1
) -> Tensor:
    """Weight gradients (k, O, C, kh, kw) of a convolution, one per consecutive slice of k.

    ``x`` (k*B, C, H, W) and ``dy`` (k*B, O, H', W'): slice c's gradient is the sum over its
    images and output positions of dy times the input patch, i.e. dy^T @ patches. The patch
    matrix is C * kh * kw values per position (at most 27 here), and ``dy`` is read in its
    own layout, never copied (the patch matrix may be, in the channels-last branch).
    Differentiable (a ``create_graph`` backward passes through it).
    """
    o, c, kh, kw = shape
    cols = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (k*B, C*kh*kw, L)
    n, q, length = cols.shape
    # patches @ dy^T, (q, O) per slice: on CPU this orientation of the product ran
    # 1.5-2x faster than dy @ patches^T
    if dy.dim() == 4 and dy.is_contiguous(memory_format=torch.channels_last) and o > 1:
        # channels-last dy: (positions, channels) is a plain (k, B*L, O) view
        d = dy.permute(0, 2, 3, 1).reshape(k, -1, o)
        p = cols.transpose(1, 2).reshape(k, -1, q)
        dw_t = torch.bmm(p.transpose(1, 2), d)
    else:  # contiguous dy: one (q, L) @ (L, O) product per image, summed per slice
        per_image = torch.bmm(cols, dy.reshape(n, o, length).transpose(1, 2))
        # each image's product is rounded to its dtype; the sum over images runs in float32
        acc = torch.promote_types(per_image.dtype, torch.float32)
        dw_t = per_image.view(k, -1, q, o).sum(1, dtype=acc).to(per_image.dtype)
    dw = dw_t.transpose(1, 2)  # (k, O, q)
    return dw.reshape(k, o, c, kh, kw)


def supports(net: nn.Module) -> bool:
    """Whether :func:`class_grads` handles ``net`` (else use ``vmap``)."""
    if not isinstance(net, ConvNet):
        return False
    for m in net.features:
        if isinstance(m, nn.Conv2d):
            if not _plain(m):
                return False
        elif isinstance(m, nn.BatchNorm2d):
            if m.training or not m.track_running_stats:
                return False
        elif not isinstance(m, _PARAMLESS + _NORMS):
            return False
    return True


def _affine(x: Tensor, w: Tensor | None, b: Tensor | None, k: int, ndim: int) -> Tensor:
    """x * w + b with per-class copies (K, *shape); ``ndim`` trailing dims of x carry them."""
    if w is None and b is None:
        return x
    xs = x.unflatten(0, (k, -1))
    view = lambda t: t.reshape(k, 1, *t.shape[1:], *([1] * (ndim - t.dim() + 1)))  # noqa: E731
    if w is not None:
        xs = xs * view(w)
    if b is not None:
        xs = xs + view(b)
    return xs.flatten(0, 1)


def class_logits(net: ConvNet, theta_k: dict[str, Tensor], images: Tensor) -> Tensor:
    """Logits (K, B, classes) of ``images`` (K, B, C, H, W), class c through copy c."""
    k = images.shape[0]
    x = images.flatten(0, 1)
    for i, m in enumerate(net.features):
        w, b = theta_k.get(f"features.{i}.weight"), theta_k.get(f"features.{i}.bias")
        if isinstance(m, nn.Conv2d):
            x = _ClassConv2d.apply(x, w, b, m.stride, m.padding)
        elif isinstance(m, nn.GroupNorm):
            x = _affine(F.group_norm(x, m.num_groups, None, None, m.eps), w, b, k, 3)
        elif isinstance(m, nn.BatchNorm2d):
            x = F.batch_norm(x, m.running_mean, m.running_var, None, None, False, 0.0, m.eps)
            x = _affine(x, w, b, k, 3)
        elif isinstance(m, nn.LayerNorm):
            x = F.layer_norm(x, m.normalized_shape, None, None, m.eps)
            x = _affine(x, w, b, k, len(m.normalized_shape))
        else:
            x = m(x)
    feats = x.flatten(1).unflatten(0, (k, -1))  # (K, B, D)
    w, b = theta_k["classifier.weight"], theta_k["classifier.bias"]
    return torch.baddbmm(b[:, None, :], feats, w.transpose(1, 2))


def stem_logits(net: ConvNet, x: Tensor) -> Tensor:
    """``net(x)``, the same values and gradients, but each convolution with few input values
    per position (the stem on 1- or 3-channel images) takes the im2col weight gradient of
    :func:`im2col_weight_grads` rather than oneDNN's (on CPU: :func:`few_input_channels`;
    elsewhere it is the network's own forward)."""
    for m in net.features:
        if isinstance(m, nn.Conv2d) and few_input_channels(m.weight) and _plain(m):
            b = None if m.bias is None else m.bias[None]
            x = _ClassConv2d.apply(x, m.weight[None], b, m.stride, m.padding)
        else:
            x = m(x)
    logits: Tensor = net.classifier(x.flatten(1))
    return logits


def _plain(m: nn.Conv2d) -> bool:
    """A convolution :class:`_ClassConv2d` computes: one group, no dilation, zero padding."""
    return (
        m.groups == 1
        and m.dilation == (1, 1)
        and not isinstance(m.padding, str)
        and m.padding_mode == "zeros"
    )


def class_loss(
    net: ConvNet,
    theta_k: dict[str, Tensor],
    images: Tensor,
    labels: Tensor,
    soft_labels: Tensor | None = None,
) -> Tensor:
    """Sum over classes of each class's mean cross-entropy (hard or soft targets)."""
    logits = class_logits(net, theta_k, images)
    if soft_labels is None:
        ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    else:
        ce = -(soft_labels.flatten(0, 1) * F.log_softmax(logits.flatten(0, 1), -1)).sum(-1)
    return ce.view(labels.shape).mean(dim=1).sum()


def expand_params(params: dict[str, Tensor], k: int) -> dict[str, Tensor]:
    """K per-class copies of each parameter, as fresh leaves that require grad."""
    return {n: p.detach().expand(k, *p.shape).clone().requires_grad_() for n, p in params.items()}


def class_grads(
    net: nn.Module,
    params: dict[str, Tensor],
    images: Tensor,
    labels: Tensor,
    *,
    soft_labels: Tensor | None = None,
    create_graph: bool = False,
    loss_fn: Any = None,
) -> list[Tensor] | None:
    """Per-class gradients, same layout as :func:`~datadistill.functional.grads.per_class_grads`.

    Returns ``None`` when ``net`` is not supported (see :func:`supports`). ``loss_fn``
    replaces :func:`class_loss` (e.g. a compiled version of it).
    """
    if not isinstance(net, ConvNet) or not supports(net):
        return None
    k = images.shape[0]
    theta_k = expand_params(params, k)
    fn = loss_fn if loss_fn is not None else class_loss
    loss = fn(net, theta_k, images, labels, soft_labels)
    names = list(params)
    grads = torch.autograd.grad(loss, [theta_k[n] for n in names], create_graph=create_graph)
    return list(grads)
