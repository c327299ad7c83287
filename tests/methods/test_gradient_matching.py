import dataclasses
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

import datadistill as dd
from datadistill.errors import ConfigError, DataError, RunError
from datadistill.evaluation import get_protocol
from datadistill.evaluation.evaluate import train_and_test
from datadistill.experts import ExpertBuffer
from datadistill.functional import gradient_distance
from datadistill.functional.class_grads import (
    class_grads,
    im2col_weight_grads,
    stem_logits,
    supports,
)
from datadistill.functional.grads import detached_params, loop_class_grads, per_class_grads
from datadistill.methods import create_method
from datadistill.methods.dc import default_loops, perturb_filters
from datadistill.models import create_model
from tests.conftest import SMOKE_HPARAMS


def test_distance_ours_by_hand():
    # one match (K=1); a conv weight grad (2 out channels, 1x1x2) and an ignored bias
    gr = torch.tensor([[[[[1.0, 0.0]]], [[[1.0, 1.0]]]]])  # (1, 2, 1, 1, 2)
    gs = torch.tensor([[[[[0.0, 1.0]]], [[[2.0, 2.0]]]]])
    bias_r, bias_s = torch.tensor([[5.0, 5.0]]), torch.tensor([[-5.0, 1.0]])
    d = gradient_distance([gr, bias_r], [gs, bias_s], "ours")
    # channel 0: orthogonal -> 1 - 0; channel 1: parallel -> 1 - 1 (up to the 1e-6 guard)
    assert d.item() == pytest.approx(1.0, abs=1e-5)


def test_distance_linear_rows_and_sum_over_matches():
    gr = torch.tensor([[[3.0, 4.0]], [[1.0, 0.0]]])  # (K=2, out=1, in=2)
    gs = torch.tensor([[[4.0, 3.0]], [[-1.0, 0.0]]])
    d = gradient_distance([gr], [gs], "ours")
    assert d.item() == pytest.approx((1 - 24 / 25) + 2, abs=1e-5)


def test_distance_mse_and_cos_by_hand():
    gr = [torch.tensor([[1.0, 2.0]]), torch.tensor([[[0.0, 2.0]]])]
    gs = [torch.tensor([[0.0, 2.0]]), torch.tensor([[[1.0, 0.0]]])]
    assert gradient_distance(gr, gs, "mse").item() == pytest.approx(1 + 0 + 1 + 4)
    # concatenated: r = (1, 2, 0, 2), s = (0, 2, 1, 0): dot 4, |r| = 3, |s| = sqrt(5)
    assert gradient_distance(gr, gs, "cos").item() == pytest.approx(
        1 - 4 / (3 * math.sqrt(5)), abs=1e-5
    )
    with pytest.raises(ValueError, match="unknown gradient distance"):
        gradient_distance(gr, gs, "l2")


def test_distance_l1_matches_convolution_kernels_only():
    # K=2 matches; a conv kernel (K, out=1, in=1, 1, 2), a linear weight and a bias
    kr = torch.tensor([[[[[1.0, -2.0]]]], [[[[0.0, 0.5]]]]])
    ks = torch.tensor([[[[[0.0, 1.0]]]], [[[[0.0, -0.5]]]]])
    lin_r, lin_s = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    bias_r, bias_s = torch.zeros(2, 3), torch.full((2, 3), 7.0)
    d = gradient_distance([kr, lin_r, bias_r], [ks, lin_s, bias_s], "l1")
    assert d.item() == pytest.approx(1 + 3 + 0 + 1)


def test_paper_loop_schedule():
    assert default_loops(1) == (1, 1)
    assert default_loops(10) == (10, 50)
    assert default_loops(50) == (50, 10)
    assert default_loops(5) == (10, 50)
    assert default_loops(100) == (50, 10)


@pytest.mark.parametrize("arch", ["convnetw32", "convnet_bn"])
def test_vmapped_grads_equal_per_class_loop(arch):
    """The batched per-class gradients, and their derivative with respect to the images,
    equal the reference's loop of one backward per class."""
    g = torch.Generator().manual_seed(0)
    net = create_model(arch, channels=1, num_classes=3, image_size=(28, 28), generator=g)
    net.eval()  # batch norm frozen, as while matching
    x = torch.randn(3, 4, 1, 28, 28, generator=g, requires_grad=True)
    y = torch.arange(3)[:, None].expand(3, 4)
    ours = per_class_grads(net, detached_params(net), x, y)
    ref = loop_class_grads(net, x, y, create_graph=True)
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    w = [torch.randn(t.shape, generator=g) for t in ours]
    (gx_ours,) = torch.autograd.grad(sum((a * v).sum() for a, v in zip(ours, w, strict=True)), x)
    (gx_ref,) = torch.autograd.grad(sum((b * v).sum() for b, v in zip(ref, w, strict=True)), x)
    assert torch.allclose(gx_ours, gx_ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "kw",
    [
        {"norm": "instancenorm"},
        {"norm": "batchnorm"},
        {"norm": "layernorm", "pooling": "maxpool"},
        {"norm": "none", "act": "leakyrelu"},
    ],
)
def test_one_pass_class_grads_equal_per_class_loop(kw):
    """One forward / backward over all classes with per-class weight copies gives each
    class's gradient, and the same derivative with respect to the images (float64)."""
    g = torch.Generator().manual_seed(0)
    net = create_model(
        "convnet", channels=1, num_classes=3, image_size=(28, 28), width=8, generator=g, **kw
    ).double()
    net.eval()
    assert supports(net)
    x = torch.randn(3, 4, 1, 28, 28, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.arange(3)[:, None].expand(3, 4)
    ours = class_grads(net, detached_params(net), x, y, create_graph=True)
    ref = loop_class_grads(net, x, y, create_graph=True)
    assert ours is not None
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-12)
    w = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in ours]
    (gx_ours,) = torch.autograd.grad(sum((a * v).sum() for a, v in zip(ours, w, strict=True)), x)
    (gx_ref,) = torch.autograd.grad(sum((b * v).sum() for b, v in zip(ref, w, strict=True)), x)
    assert torch.allclose(gx_ours, gx_ref, atol=1e-12)


def test_one_pass_class_grads_follow_autocast():
    """Under bf16 autocast the one-pass gradients come back float32, like the parameters,
    and for the weights the matching distance reads (convolutions, classifier; it ignores
    biases and norm affines, as the paper does) they are as close to the exact per-class
    gradients as the per-class loop under the same autocast."""
    g = torch.Generator().manual_seed(0)
    net = create_model(
        "convnet", channels=1, num_classes=3, image_size=(28, 28), width=8, generator=g
    )
    net.eval()
    x = torch.randn(3, 8, 1, 28, 28, generator=g)
    y = torch.arange(3)[:, None].expand(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = class_grads(net, detached_params(net), x, y)
        loop = loop_class_grads(net, x, y)
    assert ours is not None
    exact = loop_class_grads(net, x, y)
    assert all(a.dtype == torch.float32 for a in ours)
    matched = [t for t in zip(ours, loop, exact, strict=True) if t[0].dim() > 2]
    assert len(matched) == 4  # three convolutions and the classifier
    cos = lambda a, b: F.cosine_similarity(a.flatten().float(), b.flatten(), dim=0)  # noqa: E731
    for a, b, e in matched:
        for c in range(3):
            assert cos(a[c], e[c]) > 0.98
            assert cos(a[c], e[c]) > cos(b[c], e[c]) - 0.002


def test_one_pass_image_derivative_under_autocast():
    """With ``create_graph=True`` under bf16 autocast, the derivative of the per-class
    gradients with respect to the images (the synthetic side's path) follows the per-class
    loop's under the same autocast."""
    g = torch.Generator().manual_seed(1)
    net = create_model(
        "convnet", channels=1, num_classes=3, image_size=(28, 28), width=8, generator=g
    )
    net.eval()
    y = torch.arange(3)[:, None].expand(3, 4)
    gx = []
    for fn in ("ours", "loop"):
        x = torch.randn(3, 4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
        x.requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if fn == "ours":
                grads = class_grads(net, detached_params(net), x, y, create_graph=True)
            else:
                grads = loop_class_grads(net, x, y, create_graph=True)
        assert grads is not None
        v = [torch.randn(t.shape, generator=torch.Generator().manual_seed(3)) for t in grads]
        total = sum((a.float() * w).sum() for a, w in zip(grads, v, strict=True))
        gx.append(torch.autograd.grad(total, x)[0])
    cos = F.cosine_similarity(gx[0].flatten(), gx[1].flatten(), dim=0)
    assert cos > 0.98, cos


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(
    "c,size,kernel,pad,stride",
    [
        (1, 28, (3, 3), (3, 3), (1, 1)),
        (3, 32, (3, 3), (1, 1), (1, 1)),
        (3, 9, (3, 3), (2, 2), (2, 2)),
        (1, 11, (1, 5), (0, 2), (2, 1)),  # each direction its own kernel, padding, stride
    ],
)
def test_im2col_weight_grads_equal_convolution_backward(c, size, kernel, pad, stride, layout):
    """The stem's weight gradient per slice of a batch equals autograd's per slice, for
    both layouts of the output gradient, kernels, strides and paddings (float64)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, c, size, size, generator=g, dtype=torch.float64)
    w = torch.randn(5, c, *kernel, generator=g, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x, w, stride=stride, padding=pad)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64).contiguous(memory_format=layout)
    ours = im2col_weight_grads(dy, x, w.shape, stride, pad, k=2)
    for s in range(2):
        part = F.conv2d(x[3 * s : 3 * s + 3], w, stride=stride, padding=pad)
        (ref,) = torch.autograd.grad(part, w, dy[3 * s : 3 * s + 3])
        assert torch.allclose(ours[s], ref, atol=1e-10)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_im2col_weight_grads_in_bfloat16(layout):
    """In bf16 the weight gradient is as close to the float32 one as oneDNN's bf16 one."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 28, 28, generator=g)
    w = torch.randn(16, 1, 3, 3, generator=g)
    dy = torch.randn(32, 16, 32, 32, generator=g)
    exact = im2col_weight_grads(dy, x, w.shape, (1, 1), (3, 3))[0]
    xb, dyb = x.bfloat16(), dy.bfloat16().contiguous(memory_format=layout)
    ours = im2col_weight_grads(dyb, xb, w.shape, (1, 1), (3, 3))[0]
    args = (None, [1, 1], [3, 3], [1, 1], False, [0, 0], 1, [False, True, False])
    onednn = torch.ops.aten.convolution_backward(dyb, xb, w.bfloat16(), *args)[1]
    assert ours.dtype == torch.bfloat16
    err = [((t.float() - exact).norm() / exact.norm()).item() for t in (ours, onednn)]
    assert err[0] < 2 * err[1] + 1e-3, err


@pytest.mark.parametrize("channels,size,norm", [(1, 28, "instancenorm"), (3, 32, "batchnorm")])
def test_stem_logits_equal_the_network(channels, size, norm):
    """The training forward with the im2col stem gives the network's logits and parameter
    gradients (float64), and under bf16 autocast stays as close to float32 as the network's
    own forward does."""
    g = torch.Generator().manual_seed(0)
    net = create_model(
        "convnet",
        channels=channels,
        num_classes=4,
        image_size=(size, size),
        width=8,
        norm=norm,
        generator=g,
    ).double()
    x = torch.randn(5, channels, size, size, generator=g, dtype=torch.float64)
    y = torch.arange(5) % 4
    params = list(net.parameters())
    start = [b.clone() for b in net.buffers()]
    out, grads, buffers = [], [], []
    for fn in (lambda t: stem_logits(net, t), net):  # batch norm in training mode
        with torch.no_grad():  # both from the same running statistics
            for b, s0 in zip(net.buffers(), start, strict=True):
                b.copy_(s0)
        out.append(fn(x))
        grads.append(torch.autograd.grad(F.cross_entropy(out[-1], y), params))
        buffers.append([b.clone() for b in net.buffers()])
    assert torch.allclose(out[0], out[1], atol=1e-12)
    for a, b in zip(*buffers, strict=True):  # the same running-statistics updates
        assert torch.allclose(a.double(), b.double(), atol=1e-12)
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-12)
    net, x = net.float(), x.float()
    params = list(net.parameters())
    (exact,) = torch.autograd.grad(F.cross_entropy(net(x), y), params[0])
    cos = []
    for fn in (lambda t: stem_logits(net, t), net):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = fn(x)
        (gw,) = torch.autograd.grad(F.cross_entropy(logits.float(), y), params[0])
        assert gw.dtype == torch.float32
        cos.append(F.cosine_similarity(gw.flatten(), exact.flatten(), dim=0))
    assert cos[0] > 0.97 and cos[0] > cos[1] - 0.005, cos


def test_one_pass_declines_unsupported_networks():
    g = torch.Generator().manual_seed(0)
    mlp = create_model("mlp", channels=1, num_classes=3, image_size=(8, 8), generator=g)
    bn = create_model("convnet_bn", channels=1, num_classes=3, image_size=(8, 8), generator=g)
    bn.train()  # batch statistics couple the images of a batch
    x, y = torch.randn(3, 2, 1, 8, 8), torch.arange(3)[:, None].expand(3, 2)
    assert class_grads(mlp, detached_params(mlp), x, y) is None
    assert not supports(bn)


def test_dc_real_side_chunks_sum_to_the_batch_gradient(digits):
    """Chunks of the real batch, weighted, give the gradient of the whole batch."""
    m = create_method("dc", width=16, batch_real=12, real_chunk=5, compile="no")
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    x = torch.randn(10, 12, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.arange(10)[:, None].expand(10, 12)
    theta = detached_params(m.net)
    ours = m._real_grads(theta, x, y)
    ref = loop_class_grads(m.net, x, y)
    for a, b in zip(ours, ref, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


# 0: auto (16 per pass on CPU: 16 + 4); 12: uneven chunks (12 + 8); 20: the whole batch
@pytest.mark.parametrize("chunk", [0, 12, 20])
def test_dc_real_chunk_auto_and_whole_give_the_batch_gradient(digits, chunk):
    m = create_method("dc", width=16, batch_real=20, real_chunk=chunk, compile="no")
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    x = torch.randn(10, 20, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.arange(10)[:, None].expand(10, 20)
    ours = m._real_grads(detached_params(m.net), x, y)
    for a, b in zip(ours, loop_class_grads(m.net, x, y), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_dc_real_chunk_must_be_a_non_negative_int():
    with pytest.raises(ConfigError, match="real_chunk"):
        create_method("dc", real_chunk=-1)


def test_soft_label_grads_match_a_loop():
    g = torch.Generator().manual_seed(1)
    net = create_model("mlp", channels=1, num_classes=3, image_size=(8, 8), generator=g)
    x = torch.randn(3, 2, 1, 8, 8, generator=g)
    y = torch.arange(3)[:, None].expand(3, 2)
    t = torch.softmax(torch.randn(3, 2, 3, generator=g), -1)
    ours = per_class_grads(net, detached_params(net), x, y, soft_labels=t)
    params = list(net.parameters())
    for c in range(3):
        ref = torch.autograd.grad(F.cross_entropy(net(x[c]), t[c]), params)
        for a, b in zip(ours, ref, strict=True):
            assert torch.allclose(a[c], b, atol=1e-6)


@pytest.mark.parametrize("name", ["dc", "dsa"])
def test_outer_iteration_runs_the_schedule(digits, name):
    m = create_method(name, **SMOKE_HPARAMS[name])
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert (m.outer_loop, m.inner_loop) == (2, 2)
    calls: list[str] = []
    match, train = m._match, m._train_net
    m._match = lambda ol: (calls.append("match"), match(ol))[1]  # type: ignore[method-assign]
    m._train_net = lambda opt: (calls.append("train"), train(opt))[1]  # type: ignore[method-assign]
    forward = m.train_forward
    m.train_forward = lambda x: (calls.append("batch"), forward(x))[1]
    before = m.synthetic().images.detach().clone()
    metrics = m.step()
    # outer_loop matches with the network trained between them (not after the last), for
    # inner_loop epochs of one batch each (10 images, batch_train 256)
    assert calls == ["match", "train", "batch", "batch", "match"]
    assert math.isfinite(metrics["loss"]) and metrics["loss"] > 0
    assert not torch.equal(before, m.synthetic().images.detach())
    assert (m.dsa is not None) == (name == "dsa")


def test_dsa_augments_both_sides_of_a_match_with_one_draw_per_class(digits):
    """DSA is DC with Siamese augmentation: a match augments the synthetic images of each
    class and that class's real batch with the same parameters (group c = class c)."""
    m = create_method("dsa", **SMOKE_HPARAMS["dsa"])
    m.setup(digits, 2, torch.Generator().manual_seed(0), torch.device("cpu"))
    dsa, calls = m.dsa, []

    class Recorder:  # DSA, recording what it augments with which parameters
        def __getattr__(self, name):
            return getattr(dsa, name)

        def __call__(self, x, params):
            calls.append((x.detach().clone(), params))
            return dsa(x, params)

    m.dsa = Recorder()
    syn = m.synthetic().class_images().detach().clone()  # (10, 2, 1, 8, 8)
    m._match(0)
    (syn_in, syn_params), *real_calls = calls
    assert torch.equal(syn_in, syn) and syn_params.groups == 10
    label_of = {
        x.numpy().tobytes(): int(y) for x, y in zip(digits.train_x, digits.train_y, strict=True)
    }
    first = 0
    for x, params in real_calls:  # the real side, in groups of classes
        g = x.shape[0]
        assert x.shape[1] == SMOKE_HPARAMS["dsa"]["batch_real"] and params.groups == g
        for c in range(g):  # each group row: real images of its class
            assert {label_of[img.numpy().tobytes()] for img in x[c]} == {first + c}
        for key in ("brightness", "crop", "flip", "scale", "rotate"):
            assert torch.equal(getattr(params, key), getattr(syn_params, key)[first : first + g])
        first += g
    assert first == 10


def test_dc_step_trains_a_fresh_network_with_lr_net_between_matches(digits):
    """Each outer iteration starts from a network freshly drawn from the run's generator,
    and between matches trains it by SGD at ``lr_net`` on the synthetic set (one full
    batch here: IPC 1, batch_train 256)."""
    import copy

    from datadistill.models import reset_parameters

    m = create_method("dc", **{**SMOKE_HPARAMS["dc"], "lr_net": 0.05, "inner_loop": 1})
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    m.step()
    trained = copy.deepcopy(m.net)  # where the first iteration left the network
    fresh = copy.deepcopy(m.net)
    reset_parameters(fresh, torch.Generator().set_state(m.generator.get_state()))
    at_match, after_train = [], []
    match, train = m._match, m._train_net

    def spy_match(ol):
        at_match.append([p.detach().clone() for p in m.net.parameters()])
        return match(ol)

    def spy_train(opt):
        images = m.synthetic().class_images().detach().flatten(0, 1)
        labels = torch.arange(10).repeat_interleave(images.shape[0] // 10)
        before = copy.deepcopy(m.net)
        train(opt)
        grads = torch.autograd.grad(
            F.cross_entropy(before(images), labels), list(before.parameters())
        )
        after_train.append(
            [(p.detach() - 0.05 * g) for p, g in zip(before.parameters(), grads, strict=True)]
        )

    m._match, m._train_net = spy_match, spy_train
    m.step()
    for p, q in zip(at_match[0], fresh.parameters(), strict=True):
        assert torch.equal(p, q)
    assert not all(
        torch.equal(p, t) for p, t in zip(at_match[0], trained.parameters(), strict=True)
    )
    (expected,) = after_train
    for p, e in zip(at_match[1], expected, strict=True):
        torch.testing.assert_close(p, e, rtol=1e-4, atol=1e-5)


def test_dc_sets_batch_norm_statistics_from_real_images_before_a_match(digits):
    """With a batch-norm network, a match first sets the statistics from 16 real images
    per class (one training-mode pass, as the reference) and then freezes them."""
    import copy

    from datadistill.methods.dc import BN_IMAGES_PER_CLASS

    m = create_method("dc", **{**SMOKE_HPARAMS["dc"], "arch": "convnet_bn"})
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    ref, state, seen = copy.deepcopy(m.net), m.generator.get_state(), []
    real_side = m._real_side

    def spy(*args):
        seen.append([(b.running_mean.clone(), b.running_var.clone(), b.training) for b in m.bn])
        return real_side(*args)

    m._real_side = spy
    m._match(0)
    x = digits.sample_per_class(BN_IMAGES_PER_CLASS, torch.Generator().set_state(state))
    with torch.no_grad():
        ref.train()(x.flatten(0, 1))
    expected = [b for b in ref.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    assert len(expected) == len(seen[0]) > 0
    for (mean, var, training), b in zip(seen[0], expected, strict=True):
        assert not training
        torch.testing.assert_close(mean, b.running_mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(var, b.running_var, rtol=1e-4, atol=1e-5)


def test_dc_defaults_follow_ipc(digits):
    m = create_method("dc", width=32)
    m.setup(digits, 10, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert (m.outer_loop, m.inner_loop) == (10, 50)


def test_dc_net_data_real_trains_the_network_on_fresh_real_images(digits):
    synthetic = create_method("dc", width=16)
    synthetic.setup(digits, 10, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert synthetic.inner_loop == 50  # DC's epochs by IPC
    hp = {**SMOKE_HPARAMS["dc"], "net_data": "real", "net_real": 45, "inner_loop": 0}
    m = create_method("dc", **hp)
    m.setup(digits, 10, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert m.inner_loop == 1  # IDC's one pass
    x, y, soft = m._net_data()
    # 45 images over 10 classes: 5 per class (rounded up), class by class, each a real
    # training image of its label
    assert x.shape == (50, 1, 8, 8) and soft is None
    assert torch.equal(y, torch.arange(10).repeat_interleave(5))
    train = digits.train_x.flatten(1)
    rows = [int((train == row).all(1).nonzero()[0]) for row in x.flatten(1)]
    assert torch.equal(digits.train_y[rows], y)
    assert not torch.equal(m._net_data()[0], x)  # a fresh draw each time
    seen: list[torch.Tensor] = []
    forward = m.train_forward
    m.train_forward = lambda batch: (seen.append(batch), forward(batch))[1]
    m.outer_loop = 2
    metrics = m.step()
    assert math.isfinite(metrics["loss"])
    assert len(seen) == 1 and seen[0].shape[0] == 50  # one pass, one batch of real images


def test_dc_net_data_real_draws_afresh_for_each_pass(digits):
    hp = {**SMOKE_HPARAMS["dc"], "net_data": "real", "net_real": 20, "inner_loop": 3}
    m = create_method("dc", **hp)
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    draws: list[torch.Tensor] = []
    net_data = m._net_data
    m._net_data = lambda: (lambda d: (draws.append(d[0]), d)[1])(net_data())
    m._train_net(torch.optim.SGD(m.net.parameters(), lr=0.01))
    assert len(draws) == 3
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])


def test_dc_net_data_must_be_synthetic_or_real():
    with pytest.raises(ConfigError, match="net_data"):
        create_method("dc", net_data="reals")


def test_dc_l1_distance_moves_the_synthetic_images(digits):
    hp = {**SMOKE_HPARAMS["dc"], "distance": "l1"}
    m = create_method("dc", **hp)
    m.check(digits)
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    before = m.synthetic().images.clone()
    metrics = m.step()
    assert math.isfinite(metrics["loss"]) and metrics["loss"] > 0
    assert not torch.equal(m.synthetic().images, before)


def test_dc_l1_distance_refuses_a_network_without_convolutions(digits):
    m = create_method("dc", distance="l1", arch="mlp")
    with pytest.raises(ConfigError, match="convolution kernels only.*'mlp'"):
        m.check(digits)
    create_method("dc", distance="ours", arch="mlp").check(digits)  # others match an MLP


def test_dc_at_the_paper_pixel_lr_improves_on_its_real_start(digits):
    """On 8x8 digits the default ConvNet has two blocks, so its last instance norm sees 4x4
    maps. With three (2x2 maps, dividing by the spread of four values) DC's first outer
    iterations at the paper's pixel lr moved the images by twice their own scale and left a
    set far below the random real images it started from (about 20% against 75%)."""
    kw = {"ipc": 1, "seed": 0, "device": "cpu", "width": 32, "compile": "no"}
    start = dd.distill(digits, "dc", iterations=0, **kw)
    distilled = dd.distill(digits, "dc", iterations=20, **kw)
    assert distilled.manifest["hparams"]["lr_img"] == 0.1  # the paper's
    proto = dataclasses.replace(get_protocol("fast"), epochs=60)

    def acc(d: dd.Distilled) -> float:
        return (
            sum(
                train_and_test(d.images, d.labels, digits, proto, "convnetw32", seed=s)
                for s in (0, 1)
            )
            / 2
        )

    assert acc(distilled) > acc(start) + 0.03


def test_perturb_filters_moves_each_filter_by_its_own_norm():
    g = torch.Generator().manual_seed(0)
    theta = [torch.randn(6, 3, 3, 3) * torch.arange(1, 7).view(-1, 1, 1, 1), torch.randn(6)]
    out = perturb_filters(theta, 0.01, 0.09, g)
    assert torch.equal(out[1], theta[1])  # biases and norm parameters stay
    rel = (out[0] - theta[0]).flatten(1).norm(dim=1) / theta[0].flatten(1).norm(dim=1)
    # two directions, each of a filter's norm times a size in [0.01, 0.09]
    assert (rel > 0).all() and (rel <= 0.18 + 1e-6).all()
    again = perturb_filters(theta, 0.01, 0.09, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(out, again, strict=True))
    # one size for all filters: with lo == hi and the two directions nearly orthogonal
    # (27 dimensions per filter), every filter moves by about sqrt(2) * 0.05 of its norm
    big = [torch.randn(8, 512)]
    move = perturb_filters(big, 0.05, 0.05, g)[0] - big[0]
    ratio = move.norm(dim=1) / big[0].norm(dim=1)
    assert torch.allclose(ratio, torch.full_like(ratio, 0.05 * 2**0.5), rtol=0.1)
    still = perturb_filters(theta, 0.0, 0.0, g)
    assert all(torch.equal(a, b) for a, b in zip(still, theta, strict=True))


def test_dc_early_stage_networks_come_from_the_expert_buffer(digits, expert_buffer):
    hp = {
        **SMOKE_HPARAMS["dc"],
        "width": 16,
        "net_init": "experts",
        "buffer": str(expert_buffer),
        "expert_epoch": 1,
        "perturb_min": 0.0,
        "perturb_max": 0.0,
    }
    m = create_method("dc", **hp)
    m.check(digits)
    m.setup(digits, 2, torch.Generator().manual_seed(0), torch.device("cpu"))
    buf = ExpertBuffer(expert_buffer)
    epochs = [buf.epoch(i, 1) for i in range(len(buf))]
    drawn = set()
    for _ in range(8):  # unperturbed, the network is one of the experts after epoch 1,
        m._early_stage_net()  # drawn at random
        flat = torch.cat([p.detach().reshape(-1) for p in m.net.parameters()])
        drawn |= {i for i, e in enumerate(epochs) if torch.equal(flat, e)}
        assert any(torch.equal(flat, e) for e in epochs)
    assert drawn == {0, 1}
    perturbed = create_method("dc", **{**hp, "perturb_min": 0.01, "perturb_max": 0.09})
    perturbed.setup(digits, 2, torch.Generator().manual_seed(0), torch.device("cpu"))
    perturbed._early_stage_net()
    flat = torch.cat([p.detach().reshape(-1) for p in perturbed.net.parameters()])
    near = min(float((flat - e).norm() / e.norm()) for e in epochs)
    assert 0 < near < 0.2
    before = perturbed.synthetic().images.clone()
    starts: list[int] = []
    early = perturbed._early_stage_net
    perturbed._early_stage_net = lambda: (starts.append(1), early())[1]
    metrics = perturbed.step()
    assert starts == [1]  # the iteration's network came from the buffer
    assert math.isfinite(metrics["loss"])
    assert not torch.equal(perturbed.synthetic().images, before)
    extra = perturbed.manifest_extra()
    assert extra["experts"] == buf.names() and extra["expert_recipe"]["width"] == 16
    assert extra["expert_buffer"] == str(buf.root.resolve())  # whatever the hparam's spelling
    assert create_method("dc", **SMOKE_HPARAMS["dc"]).manifest_extra() == {}


def test_dc_expert_networks_keep_the_bf16_layout(digits, expert_buffer):
    """In bf16 the network is channels-last (and its forward compiled for it): the expert's
    values are copied into it in place, so it stays so."""
    hp = {
        **SMOKE_HPARAMS["dc"],
        "width": 16,
        "net_init": "experts",
        "buffer": str(expert_buffer),
        "perturb_max": 0.0,
        "perturb_min": 0.0,
        "precision": "bfloat16",
    }
    m = create_method("dc", **hp)
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    conv = [p for p in m.net.parameters() if p.dim() == 4]
    assert conv and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv)
    m._early_stage_net()
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in conv)
    flat = torch.cat([p.detach().reshape(-1) for p in m.net.parameters()])
    buf = ExpertBuffer(expert_buffer)
    assert any(torch.equal(flat, buf.epoch(i, 2)) for i in range(len(buf)))


def test_dc_expert_networks_bad_input(digits, expert_buffer, tmp_path):
    with pytest.raises(ConfigError, match="an expert buffer.*--hp buffer=FOLDER"):
        create_method("dc", net_init="experts").check(digits)
    with pytest.raises(
        ConfigError, match="width 16, not 32; pass width=16 or train experts of width 32"
    ):
        create_method("dc", net_init="experts", buffer=str(expert_buffer), width=32).check(digits)
    m = create_method("dc", net_init="experts", buffer=str(expert_buffer), width=16, expert_epoch=4)
    with pytest.raises(ConfigError, match="expert_epoch 4 is beyond the 3 epochs"):
        m.check(digits)
    with pytest.raises(ConfigError, match="'perturb_max' parameter of DC must be at least"):
        create_method("dc", perturb_min=0.1, perturb_max=0.05)
    with pytest.raises(ConfigError, match="net_init"):
        create_method("dc", net_init="pretrained")
    with pytest.warns(UserWarning, match="buffer='x' has no effect with net_init='random'"):
        create_method("dc", buffer="x")
    with pytest.raises(ConfigError, match="'perturb_max' parameter of DC must be a number"):
        create_method("dc", perturb_max=float("inf"))
    # a buffer of another version's network (the same name and width, other layers)
    other = tmp_path / "other"
    shutil.copytree(expert_buffer, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["layout"]["names"][0] = "stem.weight"
    (other / "manifest.json").write_text(json.dumps(manifest))
    m = create_method("dc", net_init="experts", buffer=str(other), width=16)
    with pytest.raises(DataError, match="does not fit this version's convnet; retrain it"):
        m.check(digits)


def _clustered_digits(digits, clusters: int = 3) -> dd.RealData:
    """``digits`` whose training images of each class are ``clusters`` prototypes (random,
    one set per class) plus a little noise, image i of a class in cluster i % clusters."""
    g = torch.Generator().manual_seed(0)
    x = digits.train_x.clone()
    protos = torch.randn(digits.info.num_classes, clusters, *x.shape[1:], generator=g)
    for c, idx in enumerate(digits.class_indices("train")):
        for j, i in enumerate(idx.tolist()):
            x[i] = protos[c, j % clusters] + 0.01 * torch.randn(x.shape[1:], generator=g)
    return dd.RealData(
        digits.info, x, digits.train_y, digits.val_x, digits.val_y, digits.test_x, digits.test_y
    )


def test_representative_batch_takes_one_image_per_cluster(digits):
    from datadistill.methods.common import representative_indices

    real = _clustered_digits(digits)
    cpu = torch.device("cpu")
    rep = representative_indices(real, lambda x: x.flatten(1), 3, 0, torch.Generator(), cpu)
    assert rep.shape == (10, 3) and rep.dtype == torch.int64
    for c, (row, idx) in enumerate(zip(rep, real.class_indices("train"), strict=True)):
        assert (real.train_y[row] == c).all()
        position = {int(i): j for j, i in enumerate(idx.tolist())}
        assert sorted(position[int(i)] % 3 for i in row) == [0, 1, 2]  # each cluster once
    assert torch.equal(real.train_images(rep)[4, 1], real.train_x[rep[4, 1]])
    # a pool: the clustering sees that many images of each class, and picks among them
    seen: list[torch.Tensor] = []
    spy = lambda x: (seen.append(x), x.flatten(1))[1]  # noqa: E731
    pooled = representative_indices(real, spy, 3, 6, torch.Generator().manual_seed(1), cpu)
    assert [len(x) for x in seen] == [6] * 10
    for c, (row, x) in enumerate(zip(pooled, seen, strict=True)):
        assert len(set(row.tolist())) == 3 and (real.train_y[row] == c).all()
        assert all((x == real.train_x[i]).flatten(1).all(1).any() for i in row)
    # in chunks of one shape, each class's last one padded: the same picks
    seen.clear()
    chunked = representative_indices(
        real, spy, 3, 6, torch.Generator().manual_seed(1), cpu, chunk=4
    )
    assert [len(x) for x in seen] == [4] * 20 and not seen[1][2:].any()  # 6 = 4 + 2
    assert torch.equal(chunked, pooled)
    # a class smaller than the batch gives all of its images, in random order, cycled
    keep = torch.ones(len(real.train_y), dtype=torch.bool)
    keep[real.class_indices()[2][2:]] = False
    small = dd.RealData(
        real.info, real.train_x[keep], real.train_y[keep], *real.split("val"), *real.split("test")
    )
    row = representative_indices(small, lambda x: x.flatten(1), 3, 0, torch.Generator(), cpu)[2]
    assert set(row.tolist()) == set(small.class_indices()[2].tolist()) and len(row) == 3
    # the batch is capped at the largest class, as a random draw is
    assert representative_indices(small, lambda x: 1 / 0, 500, 0, torch.Generator(), cpu).shape[
        1
    ] == max(small.class_counts())


def test_dc_representative_batch_is_clustered_in_each_network(digits, monkeypatch):
    from datadistill.methods import dc

    hp = {**SMOKE_HPARAMS["dsa"], "sampling": "representative", "rep_interval": 3}
    m = create_method("dsa", **hp)
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    m.outer_loop = 4
    calls: list[tuple] = []
    cluster = dc.representative_indices

    def spy(real, embed, n, pool, generator, device):
        calls.append((embed, n, pool))
        return cluster(real, embed, n, pool, generator, device)

    monkeypatch.setattr(dc, "representative_indices", spy)
    batches = []
    real_indices = m._real_indices
    m._real_indices = lambda ol: (lambda b: (batches.append(b), b)[1])(real_indices(ol))
    for _ in range(2):  # 8 matches: clusterings at matches 0 and 3 of each network
        m.step()
    assert len(calls) == 4 and all(c == (m.net.embed, 32, 0) for c in calls)
    same = [[torch.equal(a, b) for b in batches] for a in batches]
    groups = [[0, 1, 2], [3], [4, 5, 6], [7]]
    assert same == [[any(i in g and j in g for g in groups) for j in range(8)] for i in range(8)]
    assert torch.equal(batches[-1], m.rep_idx)


def test_kmeans_plus_plus_starts_in_each_cluster():
    from datadistill.methods.common import kmeans_plus_plus

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = centres.repeat_interleave(20, 0) + 0.1 * torch.randn(60, 2, generator=g)
    start = kmeans_plus_plus(x, 3, torch.Generator().manual_seed(1))
    assert start.shape == (3, 2) and all((x == row).all(1).any() for row in start)
    assert sorted(torch.cdist(start, centres).argmin(1).tolist()) == [0, 1, 2]
    # fewer distinct rows than centres: a start all the same, then the fit's distinct rows
    from datadistill.methods.common import kmeans_nearest

    two = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).repeat(3, 1)
    start = kmeans_plus_plus(two, 4, torch.Generator().manual_seed(0))
    assert len({tuple(r) for r in start.tolist()}) == 2
    assert len(set(kmeans_nearest(two, 4, 0, init=start).tolist())) == 4


def test_representative_batch_refuses_a_diverged_network(digits):
    from datadistill.methods.common import representative_indices

    nan = lambda x: torch.full((x.shape[0], 3), float("nan"))  # noqa: E731
    with pytest.raises(RunError, match="embedding of the real images is not finite"):
        representative_indices(digits, nan, 3, 0, torch.Generator(), torch.device("cpu"))


@pytest.mark.parametrize("arch,precision", [("convnet_bn", "float32"), ("convnet", "bfloat16")])
def test_dc_representative_batch_with_batch_norm_and_bf16(digits, arch, precision):
    hp = {**SMOKE_HPARAMS["dsa"], "sampling": "representative", "rep_pool": 40}
    m = create_method("dsa", **{**hp, "arch": arch, "precision": precision})
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    modes: list[bool] = []
    embed = m.embed
    m.embed = lambda x: (modes.extend(b.training for b in m.bn), embed(x))[1]
    before = m.synthetic().images.detach().clone()
    assert math.isfinite(m.step()["loss"])
    assert not torch.equal(before, m.synthetic().images.detach())
    # batch norm: the clustering sees the network as the match does, statistics frozen
    assert (len(modes) > 0 and not any(modes)) if arch == "convnet_bn" else modes == []


def test_dc_sampling_bad_input():
    with pytest.raises(ConfigError, match="sampling"):
        create_method("dc", sampling="dream")
    with pytest.raises(ConfigError, match="rep_pool 64 leaves nothing to cluster"):
        create_method("dc", sampling="representative", batch_real=64, rep_pool=64)
    with pytest.raises(ConfigError, match="'rep_pool' parameter of DC must be an int >= 0"):
        create_method("dc", sampling="representative", rep_pool=-1)
    with pytest.raises(ConfigError, match="rep_interval"):
        create_method("dc", sampling="representative", rep_interval=0)
    with pytest.warns(UserWarning, match="rep_pool=32 has no effect with sampling='random'"):
        create_method("dc", rep_pool=32)  # below batch_real, but unused: a warning only


def test_class_groups_split_many_classes_within_the_budget():
    from datadistill.methods.common import class_groups

    assert class_groups(10, 16, 1000) == [slice(0, 10)]  # all fit: one pass, as before
    groups = class_groups(100, 3, 50)  # 16 classes fit: 7 groups of 15, the last of 10
    assert [g.stop - g.start for g in groups] == [15] * 6 + [10]
    assert groups[0].start == 0 and groups[-1].stop == 100
    assert all(a.stop == b.start for a, b in zip(groups, groups[1:], strict=False))
    assert class_groups(3, 500, 50) == [slice(0, 1), slice(1, 2), slice(2, 3)]  # too big


def test_even_chunk_splits_into_as_few_equal_chunks_as_the_cap_allows():
    from datadistill.methods.common import even_chunk

    assert even_chunk(2560, 2674) == 2560  # MNIST's DM batch at width 128 on a GPU: whole
    assert even_chunk(2560, 2048) == 1280  # two equal calls, not 2048 + 512
    assert even_chunk(25600, 2048) == 1970  # 13 calls, none above the cap
    assert even_chunk(5, 0) == 1


# the one-pass real side, vmap's (mlp), frozen batch norm; the paper's and IDC's distance
@pytest.mark.parametrize(
    "arch, distance",
    [("convnet", "ours"), ("mlp", "ours"), ("convnet_bn", "mse"), ("convnet", "l1")],
)
def test_dc_match_in_class_groups_equals_one_pass(digits, monkeypatch, arch, distance):
    """A budget too small for all classes splits the real and the synthetic side into
    class groups: the images' update (through DSA and a multi-formation set) and the loss
    are those of one pass."""
    from datadistill.methods import dc

    calls = []
    grads = dc.per_class_grads
    monkeypatch.setattr(
        dc, "per_class_grads", lambda *a, **kw: (calls.append(1), grads(*a, **kw))[1]
    )
    out = []
    for budget in (None, 1):  # 1: one class per group
        hp = {**SMOKE_HPARAMS["dsa"], "factor": 2, "arch": arch, "distance": distance}
        if arch == "mlp":
            del hp["width"]
        m = create_method("dsa", **hp)
        m.setup(digits, 2, torch.Generator().manual_seed(0), torch.device("cpu"))
        if budget is not None:
            m.budget = budget
        calls.clear()
        start = [p.detach().clone() for p in m.synset.parameters()]
        loss = m._match(0)
        synset = [p.detach().clone() for p in m.synset.parameters()]
        stats = [
            s.clone().double()
            for b in m.bn
            for s in (b.running_mean, b.running_var, b.num_batches_tracked)
        ]
        out.append((loss, synset, len(calls), m.generator.get_state(), stats))
    (
        (loss_one, set_one, n_one, g_one, bn_one),
        (loss_groups, set_groups, n_groups, g_groups, bn_groups),
    ) = out
    assert n_groups > n_one  # the synthetic side did run in groups
    # batch norm: statistics measured layer by layer, one image at a time, as in one pass
    assert bool(bn_one) == (arch == "convnet_bn")
    for a, b in zip(bn_groups, bn_one, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    assert torch.equal(g_groups, g_one)  # the same random draws
    assert not all(torch.equal(a, b) for a, b in zip(set_one, start, strict=True))
    assert math.isclose(loss_groups, loss_one, rel_tol=1e-5)
    for a, b in zip(set_groups, set_one, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def _bn_layers(net):
    from torch import nn

    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _same_statistics(a, b, exact=False):
    pairs = list(zip(_bn_layers(a), _bn_layers(b), strict=True))
    assert pairs
    for x, y in pairs:
        assert int(x.num_batches_tracked) == int(y.num_batches_tracked)
        for s, t in ((x.running_mean, y.running_mean), (x.running_var, y.running_var)):
            assert torch.equal(s, t) if exact else torch.allclose(s, t, atol=1e-5, rtol=1e-5)


def test_batch_norm_statistics_in_chunks_are_those_of_one_pass():
    """Running statistics measured layer by layer over chunks of the batch equal one
    training-mode pass's, on top of earlier ones (momentum, or the cumulative average),
    for ConvNet, VGG and ResNet, BatchNorm1d, and layers called in the reverse of their
    registration order; a layer the pass never reaches is left alone, and every module is
    in training mode afterwards."""
    import copy

    from torch import nn

    from datadistill.methods.common import batch_norm_statistics
    from datadistill.models import create_model

    class Odd(nn.Module):  # BatchNorm1d (N, C) and (N, C, L), a cumulative average, an
        def __init__(self) -> None:  # unused layer, and calls in reverse registration order
            super().__init__()
            self.late = nn.BatchNorm1d(6, momentum=None)
            self.early = nn.BatchNorm1d(4)
            self.unused = nn.BatchNorm1d(6)
            self.lin = nn.Linear(4 * 12, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.early(x.flatten(2)))  # (N, 4, 12)
            return self.late(self.lin(h.flatten(1)) ** 2)

    torch.manual_seed(0)
    names = ("convnet_bn", "vgg11_bn", "resnet18_bn")
    nets = [create_model(n, channels=3, num_classes=4, image_size=(16, 16)) for n in names]
    for net in [*nets, Odd()]:
        shape = (23, 4, 3, 4) if isinstance(net, Odd) else (23, 3, 16, 16)
        x = torch.randn(shape)
        one, chunked = copy.deepcopy(net), copy.deepcopy(net)
        for scale in (1.0, 3.0):  # the second on top of the first's averages
            one.train()
            with torch.no_grad():
                one(x * scale + 1)
            batch_norm_statistics(chunked, x * scale + 1, 5)
        assert all(m.training for m in chunked.modules())
        _same_statistics(one, chunked)
        if isinstance(net, Odd):
            assert int(chunked.unused.num_batches_tracked) == 0


def test_batch_norm_statistics_fall_back_to_one_pass_and_recover_from_errors():
    """A batch that fits a chunk, and networks the layer-by-layer passes would not
    reproduce (dropout, a layer called twice), take one pass: the same statistics and
    random draws bit for bit. A network that fails mid-way leaves its statistics, modes
    and hooks as they were."""
    import copy

    from torch import nn

    from datadistill.methods.common import batch_norm_statistics
    from datadistill.models import create_model

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(5)
            self.lin = nn.Linear(5, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.lin(self.bn(x)))

    class Failing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.BatchNorm1d(5), nn.BatchNorm1d(5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            if self.training and not self.a.training:  # once it is measured: a failure
                # past it (the probe runs the whole network in eval mode)
                raise ValueError("broken")
            return self.b(h)

    torch.manual_seed(0)
    convnet = create_model("convnet_bn", channels=3, num_classes=4, image_size=(16, 16))
    dropout = nn.Sequential(nn.Linear(5, 5), nn.BatchNorm1d(5), nn.Dropout(0.5), nn.BatchNorm1d(5))
    cases = [(convnet, torch.randn(9, 3, 16, 16), 9), (dropout, torch.randn(9, 5), 2)]
    cases.append((Twice(), torch.randn(9, 5), 2))
    for net, x, chunk in cases:
        one, chunked = copy.deepcopy(net).train(), copy.deepcopy(net)
        torch.manual_seed(1)
        with torch.no_grad():
            one(x)
        torch.manual_seed(1)
        batch_norm_statistics(chunked, x, chunk)
        _same_statistics(one, chunked, exact=True)
        after = torch.rand(3)  # the random draws after it: those after one pass
        torch.manual_seed(1)
        with torch.no_grad():
            copy.deepcopy(net).train()(x)
        assert torch.equal(after, torch.rand(3))

    net = Failing()
    before = copy.deepcopy(net)
    with pytest.raises(ValueError, match="broken"):
        batch_norm_statistics(net, torch.randn(9, 5) + 2, 2)
    _same_statistics(before, net, exact=True)
    assert all(m.training for m in net.modules())
    assert not any(m._forward_pre_hooks for m in net.modules())
