import math
import shutil
import warnings

import pytest
import torch

import datadistill as dd
from datadistill.errors import ConfigError, DataError
from datadistill.experts import ExpertBuffer, ExpertRecipe, expert_file, train_experts
from datadistill.functional.unroll import FlatParams, unroll_constant_memory, unroll_full
from datadistill.methods import create_method
from datadistill.models import create_model
from tests.conftest import SMOKE_HPARAMS


def _case(soft: bool, batch: int = 4):
    g = torch.Generator().manual_seed(0)
    net = create_model("convnetw32", channels=1, num_classes=3, image_size=(8, 8), generator=g)
    for p in net.parameters():
        p.requires_grad_(False)
    layout = FlatParams.of(net)
    start = torch.cat([p.reshape(-1) for p in net.parameters()])
    target = start + 0.01 * torch.randn(start.shape, generator=g)
    images = torch.randn(6, 1, 8, 8, generator=g, requires_grad=True)
    labels = torch.arange(3).repeat_interleave(2)
    logits = torch.randn(6, 3, generator=g, requires_grad=True) if soft else None
    lr = torch.tensor(0.05, requires_grad=True)
    orders = [torch.randperm(6, generator=g)[:batch] for _ in range(8)]

    def batch_fn(i, x, s):
        idx = orders[i]
        xi = x[idx].flip(-1) * 1.1  # a differentiable "augmentation"
        return xi, (s[idx].softmax(1) if s is not None else labels[idx])

    return net, layout, start, target, images, logits, lr, batch_fn


@pytest.mark.parametrize("soft", [False, True])
def test_constant_memory_gradient_equals_full_unroll(soft):
    torch.set_default_dtype(torch.float64)
    try:
        args = _case(soft)
        full = unroll_full(*args[:7], 8, args[7])
        const = unroll_constant_memory(*args[:7], 8, args[7])
    finally:
        torch.set_default_dtype(torch.float32)
    assert full.loss == pytest.approx(const.loss, rel=1e-12)
    assert full.grad_images.abs().max() > 0
    assert torch.allclose(full.grad_images, const.grad_images, rtol=1e-9, atol=1e-12)
    assert torch.allclose(full.grad_lr, const.grad_lr, rtol=1e-9, atol=1e-12)
    if soft:
        assert torch.allclose(full.grad_soft, const.grad_soft, rtol=1e-9, atol=1e-12)


def test_unroll_is_sgd_on_flat_parameters():
    net, layout, start, target, images, _, lr, batch_fn = _case(False)
    res = unroll_full(net, layout, start, target, images, None, lr, 1, batch_fn)
    # one step by hand with the module itself
    ref = create_model("convnetw32", channels=1, num_classes=3, image_size=(8, 8))
    torch.nn.utils.vector_to_parameters(start.clone(), ref.parameters())
    x, y = batch_fn(0, images.detach(), None)
    loss = torch.nn.functional.cross_entropy(ref(x), y)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    end = start - 0.05 * torch.cat([g.reshape(-1) for g in grads])
    expected = ((end - target) ** 2).sum() / ((start - target) ** 2).sum()
    assert res.loss == pytest.approx(float(expected), rel=1e-5)
    assert layout.numel == start.numel()


def _label_expert(buffer, epoch=None):
    """Expert 0 of ``buffer`` at ``epoch`` (default: its last), in eval mode."""
    from datadistill.experts import ExpertBuffer

    buf = ExpertBuffer(buffer)
    net = buf.network()
    epoch = buf.epochs if epoch is None else epoch
    torch.nn.utils.vector_to_parameters(buf.epoch(0, epoch), net.parameters())
    return net.eval()


def test_mtt_step_learns_images_and_lr(digits, expert_buffer):
    hp = {**SMOKE_HPARAMS["mtt"], "buffer": str(expert_buffer)}
    m = create_method("mtt", **hp)
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    before = m.synthetic().images.detach().clone()
    lr0 = m.synthetic().learned_lr()
    out = m.step()
    assert math.isfinite(out["loss"]) and out["loss"] > 0
    assert not torch.equal(before, m.synthetic().images.detach())
    assert m.synthetic().learned_lr() != lr0


@pytest.mark.parametrize("unroll", ["full", "constant"])
def test_mtt_step_moves_against_the_matching_gradients(digits, expert_buffer, monkeypatch, unroll):
    """A step descends the matching loss: on the first step (momentum buffers equal to the
    gradients) the images, the learned lr and the soft labels each move by minus their
    own lr times the gradient of the loss the unroll returns (which the unroll tests check
    against autograd)."""
    import datadistill.methods.mtt as mtt_module
    from datadistill.methods.mtt import LR_FLOOR

    name = "unroll_constant_memory" if unroll == "constant" else "unroll_full"
    results, real_unroll = [], getattr(mtt_module, name)

    def spy(*args):
        results.append(real_unroll(*args))
        return results[-1]

    monkeypatch.setattr(mtt_module, name, spy)
    hp = {**SMOKE_HPARAMS["mtt"], "buffer": str(expert_buffer), "soft_labels": True}
    m = create_method("mtt", **hp, unroll=unroll, lr_lr=1e-4)
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    s, h = m.synthetic(), m.hparams
    images, lr, soft = (t.detach().clone() for t in (s.images, s.lr, s.soft_labels))
    m.step()
    (res,) = results
    lr_expected = lr - h.lr_lr * res.grad_lr.reshape(lr.shape)
    assert float(lr_expected) > LR_FLOOR * h.lr_teacher  # the floor does not hide the update
    assert float(res.grad_images.abs().max()) > 0 and float(res.grad_soft.abs().max()) > 0
    torch.testing.assert_close(s.images.detach(), images - h.lr_img * res.grad_images)
    torch.testing.assert_close(s.lr.detach(), lr_expected)
    torch.testing.assert_close(s.soft_labels.detach(), soft - h.lr_label * res.grad_soft)


def test_the_learned_lr_stays_above_its_floor(digits, expert_buffer):
    """Plain SGD on the student lr can push it to zero or below; after every step it is
    projected back to at least LR_FLOOR x lr_teacher, so the set's lr can train a network."""
    from datadistill.methods.mtt import LR_FLOOR

    m = create_method("mtt", **{**SMOKE_HPARAMS["mtt"], "buffer": str(expert_buffer)})
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    floor = LR_FLOOR * m.hparams.lr_teacher
    with torch.no_grad():
        m.synthetic().lr.fill_(-0.5)  # where a run of noisy lr updates could leave it
    out = m.step()
    assert out["syn_lr"] == pytest.approx(floor)
    assert m.synthetic().learned_lr() == pytest.approx(floor)


@pytest.mark.parametrize("unroll", ["full", "constant"])
def test_mtt_soft_labels_and_window(digits, expert_buffer, unroll):
    hp = {
        **SMOKE_HPARAMS["mtt"],
        "buffer": str(expert_buffer),
        "soft_labels": True,
        "max_start_epoch": 1,
        "window_grow_to": 2,
        "window_grow_iterations": 2,
        "unroll": unroll,
    }
    m = create_method("mtt", **hp)
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    s = m.synthetic()
    assert s.soft_labels is not None and s.soft_labels.shape == (10, 10)
    labels0, lr0 = s.soft_labels.detach().clone(), float(s.lr.detach())
    windows = []
    for _ in range(3):
        windows.append(m._max_start())
        metrics = m.step()
        assert 0 <= metrics["start_epoch"] < windows[-1]
    # DATM's window grows from max_start_epoch to window_grow_to over 2 iterations
    assert windows == [1, 2, 2]
    # the labels and the lr are learned with the images
    assert not torch.equal(labels0, m.synthetic().soft_labels.detach())
    lr = float(m.synthetic().lr.detach())
    assert lr != lr0 and lr > 0


def test_a_student_lr_other_than_the_experts_is_warned_about(digits, expert_buffer):
    hp = {**SMOKE_HPARAMS["mtt"], "buffer": str(expert_buffer)}
    with pytest.warns(UserWarning, match="trained with lr 0.01.*lr_teacher=0.01"):
        dd.distill(
            digits, "mtt", ipc=1, seed=0, iterations=0, device="cpu", **{**hp, "lr_teacher": 0.03}
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the experts' own lr: no warning
        dd.distill(digits, "mtt", ipc=1, seed=0, iterations=0, device="cpu", **hp)


def test_initial_soft_labels_are_expert_logits(digits, expert_buffer):

    hp = {**SMOKE_HPARAMS["mtt"], "buffer": str(expert_buffer), "soft_labels": True}
    m = create_method("mtt", **hp)
    m.setup(digits, 2, torch.Generator().manual_seed(0), torch.device("cpu"))
    s = m.synthetic()
    net = _label_expert(expert_buffer)  # DATM's: the last epoch (label_epoch=-1)
    with torch.no_grad():
        expected = net(s.images.detach())
    assert torch.allclose(s.soft_labels.detach(), expected, atol=1e-5)
    # and the initial images are ones that expert classifies correctly, wherever the
    # (deliberately weak, 3-epoch) expert recognises a fair share of a class at all
    with torch.no_grad():
        hit = net(digits.train_x).argmax(1) == digits.train_y
    for c in range(10):
        if hit[digits.train_y == c].float().mean() >= 0.2:
            assert (expected.argmax(1)[s.labels == c] == c).all(), c
    # the labels' own momentum (DATM: 0.9), not the images'
    assert m.opt_label.param_groups[0]["momentum"] == 0.9


def test_soft_label_epoch_is_selectable(digits, expert_buffer):

    hp = {**SMOKE_HPARAMS["mtt"], "buffer": str(expert_buffer), "soft_labels": True}
    m = create_method("mtt", **hp, label_epoch=1)
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    net = _label_expert(expert_buffer, 1)
    with torch.no_grad():
        expected = net(m.synthetic().images.detach())
    assert torch.allclose(m.synthetic().soft_labels.detach(), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="label_epoch"):
        create_method("mtt", **hp, label_epoch=9).setup(
            digits, 1, torch.Generator(), torch.device("cpu")
        )


@pytest.mark.parametrize("factor,soft", [(1, False), (2, False), (2, True)])
def test_mtt_same_result_with_either_unroll(digits, expert_buffer, factor, soft):
    common = dict(ipc=1, seed=0, iterations=2, device="cpu", factor=factor, soft_labels=soft)
    hp = {**SMOKE_HPARAMS["mtt"], "buffer": str(expert_buffer)}
    a = dd.distill(digits, "mtt", unroll="full", **common, **hp)
    b = dd.distill(digits, "mtt", unroll="constant", **common, **hp)
    assert a.factor == b.factor == factor
    assert torch.allclose(a.images, b.images, atol=1e-4)
    assert a.lr == pytest.approx(b.lr, rel=1e-4)
    if soft:
        assert torch.allclose(a.soft_labels, b.soft_labels, atol=1e-4)


def test_mtt_multiformation_student_trains_on_tiles_with_their_images_soft_label(
    digits, expert_buffer, tmp_path
):
    from datadistill.synthetic import MultiFormationSet, decode
    from datadistill.synthetic.formation import at_tile_resolution

    hp = {**SMOKE_HPARAMS["mtt"], "buffer": str(expert_buffer), "soft_labels": True}
    m = create_method("mtt", **hp, factor=2)
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    s = m.synthetic()
    assert isinstance(s, MultiFormationSet) and s.factor == 2
    assert s.images.shape == (10, 1, 8, 8) and s.soft_labels.shape == (10, 10)
    # each stored image's label starts as the mean of the label expert's logits on its
    # four decoded tiles
    net = _label_expert(expert_buffer)
    with torch.no_grad():
        tiles = net(decode(s.images.detach(), 2)).view(10, 4, 10)
    assert torch.allclose(s.soft_labels.detach(), tiles.mean(1), atol=1e-5)
    # DATM's start: wherever the (weak, 3-epoch) expert recognises a fair share of a class's
    # images at tile resolution, every tile, and so the mean label, is on the right class
    with torch.no_grad():
        hit = net(at_tile_resolution(digits.train_x, 2)).argmax(1) == digits.train_y
        tile_ok = tiles.argmax(2) == s.labels[:, None]
    checked = [c for c in range(10) if hit[digits.train_y == c].float().mean() >= 0.2]
    assert len(checked) >= 5  # the expert is weak, but not so weak that nothing is checked
    for c in checked:
        assert tile_ok[s.labels == c].all(), c
        assert (s.soft_labels.argmax(1)[s.labels == c] == c).all(), c
    images, labels, soft = s.materialize()
    assert images.shape == (40, 1, 8, 8) and soft.shape == (40, 10)
    assert labels.tolist() == [c for c in range(10) for _ in range(4)]
    assert torch.equal(soft[4:8], s.soft_labels[1:2].expand(4, 10))
    # one step on the whole set moves every stored image, its soft label and the lr
    before = [t.detach().clone() for t in (s.images, s.soft_labels, s.lr)]
    m.step()
    assert (s.images.detach() != before[0]).flatten(1).any(1).all()
    assert (s.soft_labels.detach() != before[1]).any(1).all()
    assert float(s.lr.detach()) != float(before[2])
    # the artefact keeps the stored images, one soft label each, and the learned lr
    d = dd.distill(digits, "mtt", ipc=1, seed=0, iterations=1, device="cpu", factor=2, **hp)
    back = dd.load(d.save(tmp_path / "mf.safetensors"))
    assert back.factor == 2 and back.images.shape == (10, 1, 8, 8) and back.lr is not None
    assert back.soft_labels.shape == (10, 10)
    x, y, sl = back.training_set()
    assert x.shape == (40, 1, 8, 8) and sl.shape == (40, 10) and y.shape == (40,)
    assert back.manifest["synset"]["soft_labels"] and back.manifest["synset"]["learned_lr"]


def test_mtt_bad_buffers(digits, expert_buffer, tmp_path):
    with pytest.raises(ConfigError, match="expert buffer"):
        create_method("mtt").setup(digits, 1, torch.Generator(), torch.device("cpu"))
    with pytest.raises(DataError, match="No expert buffer"):
        create_method("mtt", buffer=str(tmp_path / "none")).setup(
            digits, 1, torch.Generator(), torch.device("cpu")
        )
    # 3-epoch experts, expert_epochs 1: starts 0..2 reach epoch 3 at most, so 3 is the
    # largest valid max_start_epoch (exclusive) and 4 is one too many
    hp = {**SMOKE_HPARAMS["mtt"], "buffer": str(expert_buffer), "max_start_epoch": 3}
    create_method("mtt", **hp).setup(digits, 1, torch.Generator(), torch.device("cpu"))
    hp["max_start_epoch"] = 4
    with pytest.raises(ConfigError, match="exceeds"):
        create_method("mtt", **hp).setup(digits, 1, torch.Generator(), torch.device("cpu"))
    other = dd.load_dataset("digits", zca=True)
    hp["max_start_epoch"] = 2
    with pytest.raises(ConfigError, match="zca"):
        create_method("mtt", **hp).setup(other, 1, torch.Generator(), torch.device("cpu"))


def test_artefact_records_expert_recipe_and_evaluation_warns_on_other_network(
    digits, expert_buffer
):
    import dataclasses
    import warnings

    from datadistill.evaluation.evaluate import _warn_if_lr_learned_elsewhere

    hp = {**SMOKE_HPARAMS["mtt"], "buffer": str(expert_buffer)}
    d = dd.distill(digits, "mtt", ipc=1, seed=0, iterations=1, device="cpu", **hp)
    recipe = d.manifest["expert_recipe"]
    assert (recipe["arch"], recipe["width"]) == ("convnet", 16)
    with pytest.warns(UserWarning, match="learned for the experts' convnet"):
        _warn_if_lr_learned_elsewhere(d, ["convnet"])  # evaluation's width 128
    same = dataclasses.replace(
        d, manifest={**d.manifest, "expert_recipe": {**recipe, "width": 128}}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_lr_learned_elsewhere(same, ["convnet"])


def _copy_buffer(src, dst, experts):
    dst.mkdir()
    shutil.copy(src / "manifest.json", dst / "manifest.json")
    for i in experts:
        shutil.copy(expert_file(src, i), expert_file(dst, i))


def test_resume_draws_from_the_experts_it_started_with(digits, expert_buffer, tmp_path):
    """Experts finished while a run was paused do not change what its resume draws: the
    resumed run equals an uninterrupted one on the buffer as it was, and the artefact names
    the experts used. A resume whose expert has gone says so in one sentence."""
    one = tmp_path / "one"
    _copy_buffer(expert_buffer, one, [0])
    hp = {**SMOKE_HPARAMS["mtt"], "buffer": str(one)}
    common = dict(ipc=1, seed=3, device="cpu")
    straight = dd.distill(digits, "mtt", iterations=6, **common, **hp)
    assert straight.manifest["experts"] == ["expert_0000.safetensors"]
    ckpt = tmp_path / "ckpt.pt"
    dd.distill(digits, "mtt", iterations=3, checkpoint=ckpt, checkpoint_every=1, **common, **hp)
    # the second expert finishes while the run is paused
    shutil.copy(expert_file(expert_buffer, 1), expert_file(one, 1))
    resumed = dd.distill(digits, "mtt", iterations=6, checkpoint=ckpt, resume=True, **common, **hp)
    assert torch.equal(straight.images, resumed.images)
    assert resumed.manifest["experts"] == ["expert_0000.safetensors"]
    # a new run reads both experts
    assert dd.distill(digits, "mtt", iterations=1, **common, **hp).manifest["experts"] == [
        "expert_0000.safetensors",
        "expert_0001.safetensors",
    ]
    expert_file(one, 0).unlink()
    with pytest.raises(DataError, match="no longer holds expert_0000"):
        dd.distill(digits, "mtt", iterations=6, checkpoint=ckpt, resume=True, **common, **hp)


def test_batch_norm_label_expert_uses_its_own_statistics(digits, tmp_path):
    """Buffers keep parameters only: DATM's label logits of a batch-norm expert come from
    running statistics estimated on real data, not a fresh network's (0, 1)."""
    recipe = ExpertRecipe(arch="convnet_bn", epochs=3, batch_size=64)
    root = tmp_path / "bn"
    train_experts(digits, root, 1, recipe, device="cpu", log=lambda m: None)
    hp = {**SMOKE_HPARAMS["mtt"], "buffer": str(root), "soft_labels": True}
    m = create_method("mtt", **hp)
    m.setup(digits, 2, torch.Generator().manual_seed(0), torch.device("cpu"))
    bn = [x for x in m.net.modules() if isinstance(x, torch.nn.BatchNorm2d)]
    assert bn and not torch.allclose(bn[0].running_var, torch.ones_like(bn[0].running_var))
    # the labels agree with the classes of the images, which an eval-mode network with
    # unit statistics does not manage after two epochs
    s = m.synthetic()
    assert (s.soft_labels.argmax(1) == s.labels).float().mean() >= 0.8


def test_mtt_multiformation_student_sees_each_tile_with_its_own_images_label(
    digits, expert_buffer, monkeypatch
):
    """At every student step the mini-batch holds the decoded tiles ``idx`` of the set, each
    with the soft label of the stored image it was cut from (what ``decode_set`` gives the
    artefact's tiles)."""
    import datadistill.methods.mtt as mtt_module
    from datadistill.synthetic.formation import decode_rows, decode_set

    drawn, batches = [], []
    real_unroll = mtt_module.unroll_constant_memory

    def spy_rows(images, idx, factor):
        drawn.append(idx.clone())
        return decode_rows(images, idx, factor)

    def spy_unroll(net, layout, start, target, images, soft, lr, steps, batch_fn):
        batches.extend(batch_fn(i, images.detach(), soft.detach()) for i in range(steps))
        return real_unroll(net, layout, start, target, images, soft, lr, steps, batch_fn)

    monkeypatch.setattr(mtt_module, "decode_rows", spy_rows)
    monkeypatch.setattr(mtt_module, "unroll_constant_memory", spy_unroll)
    hp = {**SMOKE_HPARAMS["mtt"], "buffer": str(expert_buffer), "soft_labels": True}
    m = create_method("mtt", **hp, factor=2, batch_syn=6, dsa=False)
    m.setup(digits, 2, torch.Generator().manual_seed(0), torch.device("cpu"))
    s = m.synthetic()
    with torch.no_grad():
        x_all, _, soft_all = decode_set(s.images, s.labels, s.soft_labels, 2)
    m.step()
    steps = hp["syn_steps"]
    assert len(batches) == steps and len(drawn) >= steps
    assert len(torch.cat(drawn[:steps]).unique()) > 6  # several stored images, not one
    for idx, (x, y) in zip(drawn[:steps], batches, strict=True):
        assert idx.shape == (6,)
        torch.testing.assert_close(x, x_all[idx])
        torch.testing.assert_close(y, soft_all[idx].softmax(1))


def test_more_student_steps_than_the_experts_took_warns(digits, expert_buffer):
    """On a small training split an expert epoch is a few SGD steps: students taking more
    steps than the experts between start and target get a warning that names the bound."""
    per_epoch = -(-digits.train_x.shape[0] // ExpertBuffer(expert_buffer).recipe.batch_size)
    for steps, warns in ((per_epoch, False), (per_epoch + 1, True)):
        m = create_method(
            "mtt", buffer=str(expert_buffer), syn_steps=steps, expert_epochs=1, max_start_epoch=1
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m.check(digits)
        said = [str(w.message) for w in caught if "syn_steps" in str(w.message)]
        assert bool(said) == warns
        if warns:
            assert f"which took {per_epoch} (batches of" in said[0]
            assert f"syn_steps={per_epoch} or less" in said[0]
