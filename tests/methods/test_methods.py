import dataclasses
import math

import pytest
import torch

import datadistill as dd
from datadistill.errors import ConfigError, UnknownNameError
from datadistill.evaluation import get_protocol, train_and_test
from datadistill.functional import mean_embedding_loss, mmd_loss
from datadistill.functional.distances import MMD_BANDWIDTH_SCALES
from datadistill.methods import METHODS, create_method
from datadistill.methods.coreset import herding, kcenter
from tests.conftest import SMOKE_HPARAMS, smoke_hparams


def test_every_method_has_smoke_settings():
    assert set(SMOKE_HPARAMS) == {n.lower() for n in METHODS.names()}


@pytest.mark.parametrize("name", METHODS.names())
def test_method_runs_and_beats_chance(digits, name, request):
    hp = smoke_hparams(name, request)
    d = dd.distill(digits, name, ipc=2, seed=0, iterations=5, device="cpu", **hp)
    assert d.images.shape == (20, 1, 8, 8)
    assert torch.isfinite(d.images).all()
    assert d.labels.tolist() == torch.arange(10).repeat_interleave(2).tolist()
    proto = dataclasses.replace(get_protocol("fast"), epochs=60)
    acc = train_and_test(d.images, d.labels, digits, proto, "convnetw32", seed=0)
    assert acc > 0.3  # chance is 0.1
    if METHODS.get(name).needs_steps:  # the steps changed the set (init="real" alone beats
        # chance): compare with the same seed's initial set
        d0 = dd.distill(digits, name, ipc=2, seed=0, iterations=0, device="cpu", **hp)
        assert not torch.equal(d0.images, d.images)


def test_hyperparameters_are_validated():
    with pytest.raises(
        ConfigError, match="The 'lr_img' parameter of DM must be a number > 0. Got -1"
    ):
        create_method("dm", lr_img=-1)
    with pytest.raises(ConfigError, match="Unknown hyperparameter.*Did you mean 'lr_img'"):
        create_method("dm", lr_image=1.0)
    with pytest.raises(UnknownNameError, match="Did you mean 'dm'"):
        create_method("dmm")
    with pytest.raises(dataclasses.FrozenInstanceError):
        create_method("dm").hparams.lr_img = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "switch"), [("dm", "dsa"), ("dsa", "dsa"), ("mtt", "soft_labels")]
)
@pytest.mark.parametrize("value", ["no", "false", 0, 1, None])
def test_switches_take_only_true_or_false(name, switch, value):
    """A string such as "no" is truthy: it must be refused, not turn the switch on."""
    with pytest.raises(ConfigError, match=f"The '{switch}' parameter of .* must be true or false"):
        create_method(name, **{switch: value})
    assert getattr(create_method(name, **{switch: False}).hparams, switch) is False


@pytest.mark.parametrize("name", ["dm", "dc", "dsa"])
def test_compile_takes_true_and_false_as_yes_and_no(name):
    """``--hp compile=false`` reads as a bool: it means "no", not an invalid choice."""
    assert create_method(name, compile=False).hparams.compile == "no"
    assert create_method(name, compile=True).hparams.compile == "yes"
    with pytest.raises(ConfigError, match="'compile' parameter"):
        create_method(name, compile="maybe")


@pytest.mark.parametrize(
    "ipc,message",
    [(0, "IPC must be an integer >= 1"), (10_000, "IPC 10000 exceeds the smallest class")],
)
def test_bad_ipc(digits, ipc, message):
    with pytest.raises(ConfigError, match=message):
        dd.distill(digits, "dm", ipc=ipc, iterations=1, device="cpu")


def test_ipc_equal_to_the_smallest_class_is_accepted(digits):
    smallest = min(digits.class_counts("train"))
    d = dd.distill(digits, "random", ipc=smallest, seed=0, device="cpu")
    assert d.images.shape[0] == smallest * 10


def test_dm_loss_zero_on_identical_means():
    feats = torch.randn(3, 5, 7)
    assert mean_embedding_loss(feats, feats.flip(1)).item() == pytest.approx(0.0, abs=1e-10)
    real = torch.zeros(2, 4, 3)
    syn = torch.ones(2, 1, 3)
    assert mean_embedding_loss(real, syn).item() == pytest.approx(6.0)


def test_mmd_loss_by_hand():
    """Real embeddings 0 and 2, one synthetic at 0: the median squared distance b is 4, and
    per kernel of width s * b the biased MMD^2 is (1 - exp(-1 / s)) / 2, times b."""
    real = torch.tensor([[[0.0], [2.0]]])
    syn = torch.tensor([[[0.0]]])
    want = sum(2 * (1 - math.exp(-1 / s)) for s in MMD_BANDWIDTH_SCALES)
    assert mmd_loss(real, syn).item() == pytest.approx(want, rel=1e-6)


def test_mmd_loss_is_zero_on_the_same_set_and_scales_as_the_mean_loss():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(3, 40, 6, generator=g)
    assert mmd_loss(real, real.flip(1)).item() == pytest.approx(0.0, abs=1e-5)
    syn = (torch.randn(3, 4, 6, generator=g) + 1).requires_grad_()
    mmd_loss(real, syn).backward()
    mean_grad = torch.autograd.grad(mean_embedding_loss(real, syn), syn)[0]
    assert syn.grad is not None and torch.isfinite(syn.grad).all()
    ratio = syn.grad.norm() / mean_grad.norm()
    assert 0.1 < ratio < 10  # scaled by the bandwidth: DM's learning rates carry over
    # like the mean loss, it scales with the square of the embeddings
    twice = mmd_loss(2 * real, 2 * syn.detach()) / mmd_loss(real, syn.detach())
    assert twice.item() == pytest.approx(4.0, rel=1e-4)


def test_mmd_loss_against_a_loop_over_classes_and_pairs():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    syn = torch.randn(3, 3, 4, generator=g, dtype=torch.float64)
    want = 0.0
    for r, s in zip(real, syn, strict=True):
        off = [((a - b) ** 2).sum() for i, a in enumerate(r) for j, b in enumerate(r) if i != j]
        band = sorted(float(d) for d in off)[(len(off) - 1) // 2]  # the lower median

        def k(a, b, band=band):
            d = float(((a - b) ** 2).sum())
            return sum(math.exp(-d / (sc * band)) for sc in MMD_BANDWIDTH_SCALES)

        rr = sum(k(a, b) for a in r for b in r) / len(r) ** 2
        rs = sum(k(a, b) for a in r for b in s) / (len(r) * len(s))
        ss = sum(k(a, b) for a in s for b in s) / len(s) ** 2
        want += band * (rr - 2 * rs + ss)
    assert mmd_loss(real, syn).item() == pytest.approx(want, rel=1e-9)
    # classes do not mix, so class groups (one class at a time here) give the same sum
    by_class = sum(mmd_loss(real[i : i + 1], syn[i : i + 1]) for i in range(3))
    assert mmd_loss(real, syn).item() == pytest.approx(float(by_class), rel=1e-12)
    # bf16 features are compared in float32, not in bf16's cancelling arithmetic
    low = mmd_loss(real.bfloat16(), syn.bfloat16())
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(
        mmd_loss(real.bfloat16().double(), syn.bfloat16().double()).item(), rel=1e-4
    )


def test_mmd_kernel_sum_by_squaring_equals_one_exp_per_kernel():
    from datadistill.functional.distances import _kernel_sum

    scales = MMD_BANDWIDTH_SCALES
    assert all(b == 2 * a for a, b in zip(scales, scales[1:], strict=False))  # squaring halves
    d = torch.rand(3, 7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    band = torch.tensor([0.1, 1.0, 5.0], dtype=torch.float64)
    direct = sum(torch.exp(-d / (s * band)[:, None, None]) for s in scales)
    torch.testing.assert_close(_kernel_sum(d * 10, band * 10), direct, rtol=1e-12, atol=1e-12)


def test_mmd_loss_with_one_real_embedding_still_pulls():
    real = torch.zeros(2, 1, 3)
    syn = torch.ones(2, 2, 3, requires_grad=True)
    syn.data[:, 1] += 1
    loss = mmd_loss(real, syn)
    loss.backward()
    assert loss.item() > 0 and syn.grad is not None and syn.grad.abs().sum() > 0


def test_dm_mmd_distance_runs_and_is_validated(digits):
    d = dd.distill(
        digits,
        "dm",
        ipc=2,
        seed=0,
        iterations=3,
        device="cpu",
        **{**SMOKE_HPARAMS["dm"], "distance": "mmd"},
    )
    d0 = dd.distill(digits, "dm", ipc=2, seed=0, iterations=3, device="cpu", **SMOKE_HPARAMS["dm"])
    assert torch.isfinite(d.images).all() and not torch.equal(d.images, d0.images)
    assert d.manifest["hparams"]["distance"] == "mmd"
    with pytest.raises(
        ConfigError, match="'distance' parameter of DM must be one of 'mean', 'mmd'"
    ):
        create_method("dm", distance="gauss")


def test_dm_batched_step_equals_per_class_reference(digits):
    """One batched DM step equals the paper's per-class loop (same net, batches, DSA)."""
    from datadistill.models import reset_parameters

    m = create_method("dm", **SMOKE_HPARAMS["dm"])
    g = torch.Generator().manual_seed(0)
    m.setup(digits, 2, g, torch.device("cpu"))
    before = m.synthetic().images.detach().clone()
    state = g.get_state()
    m.step()
    after = m.synthetic().images.detach()

    g.set_state(state)  # replay the same draws: network, real batches, DSA parameters
    reset_parameters(m.net, g)
    real = digits.sample_per_class(SMOKE_HPARAMS["dm"]["batch_real"], g)
    params = m.dsa.sample(10, g)
    syn = before.clone().requires_grad_(True)
    real_aug = m.dsa(real, params)  # group c = class c, the same draw for real and synthetic
    syn_aug = m.dsa(syn.view(10, 2, 1, 8, 8), params)
    total = torch.zeros(())
    for c in range(10):  # the reference: one class at a time
        diff = m.net.embed(real_aug[c]).mean(0) - m.net.embed(syn_aug[c]).mean(0)
        total = total + (diff**2).sum()
    total.backward()
    expected = before - 1.0 * syn.grad  # first SGD step: momentum buffer = gradient
    assert torch.allclose(after, expected, atol=1e-5)


def _one_step_per_precision(digits, method: str, key: str):
    """One step of ``method`` with ``key`` float32 and bfloat16 from the same draws: each
    precision's loss, pixel update and method, after checking the pixels stay float32."""
    steps = {}
    for precision in ("float32", "bfloat16"):
        m = create_method(method, **SMOKE_HPARAMS[method], **{key: precision})
        m.setup(digits, 2, torch.Generator().manual_seed(0), torch.device("cpu"))
        before = m.synthetic().images.detach().clone()
        loss = m.step()["loss"]
        after = m.synthetic().images.detach()
        assert after.dtype == torch.float32
        steps[precision] = (loss, after - before, m)
    return steps["float32"], steps["bfloat16"]


def test_dm_real_half_in_bfloat16_follows_float32(digits):
    """``real_precision="bfloat16"`` only changes the real half's forward: the same draws
    give a loss and a pixel update within bf16 rounding of float32's, all tensors with a
    gradient stay float32."""
    (loss32, delta32, _), (loss16, delta16, _) = _one_step_per_precision(
        digits, "dm", "real_precision"
    )
    assert loss16 == pytest.approx(loss32, rel=0.05)
    assert not torch.equal(delta16, delta32)  # it did compute in bf16
    cos = torch.nn.functional.cosine_similarity(delta16.flatten(), delta32.flatten(), dim=0)
    assert cos > 0.99, cos


def test_dc_in_bfloat16_follows_float32(digits):
    """``precision="bfloat16"`` computes the real-side gradients and the network's training
    in bf16: the same draws give a loss and a pixel update close to float32's, while the
    pixels, the network's parameters and their gradients stay float32."""
    (loss32, delta32, m32), (loss16, delta16, m16) = _one_step_per_precision(
        digits, "dc", "precision"
    )
    for m in (m32, m16):
        assert all(p.dtype == torch.float32 for p in m.net.parameters())
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in m.net.parameters())
    assert loss16 == pytest.approx(loss32, rel=0.1)
    assert not torch.equal(delta16, delta32)  # it did compute in bf16
    cos = torch.nn.functional.cosine_similarity(delta16.flatten(), delta32.flatten(), dim=0)
    assert cos > 0.95, cos


def test_precision_choices():
    from datadistill._device import native_bf16
    from datadistill.methods.common import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("float32", cpu) == torch.float32
    assert resolve_precision("bfloat16", cpu) == torch.bfloat16
    expected = torch.bfloat16 if native_bf16(cpu) else torch.float32
    assert resolve_precision("auto", cpu) == expected
    with pytest.raises(ConfigError, match="real_precision"):
        create_method("dm", real_precision="float16")
    with pytest.raises(ConfigError, match="precision"):
        create_method("dc", precision="half")


def test_herding_picks_mean_matching_points():
    # two clusters: herding alternates so the running mean stays near the global mean
    feats = torch.tensor([[0.0], [0.1], [10.0], [10.1], [5.0]])
    assert herding(feats, 1).tolist() == [4]  # the point nearest the mean (5.04)
    chosen = herding(feats, 3).tolist()
    assert len(set(chosen)) == 3
    assert abs(feats[chosen].mean() - feats.mean()) < 0.5


def test_kcenter_covers_far_points():
    feats = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [0.0, 9.0]])
    assert kcenter(feats, 3, first=0).tolist() == [0, 3, 2]


def test_kcenter_picks_distinct_rows_among_duplicates():
    """Duplicate images tie at distance 0 with the chosen ones: still k distinct rows."""
    feats = torch.tensor([[0.0], [0.0], [1.0], [1.0]])
    assert sorted(kcenter(feats, 4, first=0).tolist()) == [0, 1, 2, 3]


def test_kmeans_nearest_takes_one_row_per_cluster():
    from datadistill.methods.common import kmeans_nearest

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = (centres.repeat_interleave(20, 0) + 0.1 * torch.randn(60, 2, generator=g))[
        torch.randperm(60, generator=g)
    ]
    chosen = kmeans_nearest(x, 3, seed=0)
    cluster = torch.cdist(x[chosen], centres).argmin(1)
    assert sorted(cluster.tolist()) == [0, 1, 2]
    # identical rows: still k distinct rows
    same = kmeans_nearest(torch.ones(5, 4), 3, seed=0)
    assert len(set(same.tolist())) == 3


def test_kmeans_init_takes_the_images_nearest_to_each_class_centroids(digits):
    from datadistill.methods.common import init_synset, kmeans_nearest

    s = init_synset(digits, 3, "kmeans", torch.Generator().manual_seed(0))
    seed = int(torch.randint(2**31 - 1, (1,), generator=torch.Generator().manual_seed(0)))
    for c, idx in enumerate(digits.class_indices("train")):
        x = digits.train_x[idx]
        assert torch.equal(s.images[3 * c : 3 * c + 3].detach(), x[kmeans_nearest(x, 3, seed)])
    assert s.labels.tolist() == torch.arange(10).repeat_interleave(3).tolist()


def test_kmeans_features_init_clusters_each_class_in_a_trained_embedding(digits):
    from datadistill.methods import common
    from datadistill.methods.features import all_class_features

    s = common.init_synset(digits, 3, "kmeans-features", torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    per_class = all_class_features(
        digits,
        "convnet",
        common.FEATURE_INIT_WIDTH,
        common.FEATURE_INIT_STEPS,
        g,
        torch.device("cpu"),
    )
    seed = int(torch.randint(2**31 - 1, (1,), generator=g))
    pixel = common.init_synset(digits, 3, "kmeans", torch.Generator().manual_seed(0))
    for c, (feats, idx) in enumerate(per_class):
        rows = idx[common.kmeans_nearest(feats, 3, seed)]
        assert torch.equal(digits.train_y[rows], torch.full((3,), c))
        assert torch.equal(s.images[3 * c : 3 * c + 3].detach(), digits.train_x[rows])
    assert not torch.equal(s.images.detach(), pixel.images.detach())  # another space


def test_herding_init_takes_herdings_picks_in_the_trained_embedding(digits):
    from datadistill.methods import common
    from datadistill.methods.features import all_class_features
    from datadistill.synthetic import MultiFormationSet

    s = common.init_synset(digits, 3, "herding", torch.Generator().manual_seed(0))
    per_class = all_class_features(
        digits,
        "convnet",
        common.FEATURE_INIT_WIDTH,
        common.FEATURE_INIT_STEPS,
        torch.Generator().manual_seed(0),
        torch.device("cpu"),
    )
    for c, (feats, idx) in enumerate(per_class):
        rows = idx[herding(feats, 3)]
        assert torch.equal(digits.train_y[rows], torch.full((3,), c))
        assert torch.equal(s.images[3 * c : 3 * c + 3].detach(), digits.train_x[rows])
    # in the multi-formation form herding's first factor**2 picks, in its order, fill the tiles
    mf = common.init_synset(digits, 1, "herding", torch.Generator().manual_seed(0), factor=2)
    four = torch.stack([digits.train_x[idx[herding(f, 4)]] for f, idx in per_class])
    assert torch.equal(mf.images.detach(), MultiFormationSet.from_real(four, 2).images.detach())


@pytest.mark.parametrize("name", ["herding", "kcenter"])
def test_feature_coresets_store_their_picks_in_the_trained_embedding(digits, name):
    """The registered baselines keep the real images herding / k-center choose in the
    embedding of a network trained on the training split (k-center from a first image
    drawn by the run's generator after that training), class by class."""
    from datadistill.methods import features
    from datadistill.methods.features import all_class_features

    d = dd.distill(digits, name, ipc=3, seed=0, device="cpu", width=32, train_steps=30)
    features._LAST.clear()  # train the feature network again here, not from the run's cache
    g = torch.Generator().manual_seed(0)  # the run's generator for seed 0
    per_class = all_class_features(digits, "convnet", 32, 30, g, torch.device("cpu"))
    for c, (feats, idx) in enumerate(per_class):
        if name == "herding":
            pick = herding(feats.float(), 3)
        else:
            pick = kcenter(feats.float(), 3, int(torch.randint(len(feats), (1,), generator=g)))
        assert torch.equal(d.images[3 * c : 3 * c + 3], digits.train_x[idx[pick]]), c
        assert torch.equal(d.labels[3 * c : 3 * c + 3], torch.full((3,), c))


def test_feature_cache_is_reused_and_forgotten_with_its_data(monkeypatch):
    """Herding and k-center with one seed train one feature network; the cached features
    live in host memory and go when their data are freed."""
    import gc

    import datadistill as dd
    from datadistill.methods import features

    trained = []
    train = features.train_feature_network
    monkeypatch.setattr(
        features, "train_feature_network", lambda *a, **k: trained.append(1) or train(*a, **k)
    )
    real = dd.load_dataset("digits", val_size=0)
    cpu = torch.device("cpu")
    first = features.all_class_features(real, "convnet", 8, 2, torch.Generator(), cpu)
    again = features.all_class_features(real, "convnet", 8, 2, torch.Generator(), cpu)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert len(trained) == 1 and features._LAST
    # a device copy made by RealData.to (on CUDA, new tensors every run) is the same data
    copy = dd.RealData(
        real.info,
        real.train_x.clone(),
        real.train_y.clone(),
        real.val_x,
        real.val_y,
        real.test_x,
        real.test_y,
    )
    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "to", lambda t, *a, **k: t.clone())  # new tensors, as on CUDA
        moved = real.to("cpu")
    assert moved.train_x is not real.train_x and moved.source_train_x is real.train_x
    features.all_class_features(moved, "convnet", 8, 2, torch.Generator(), cpu)
    assert len(trained) == 1
    features.all_class_features(copy, "convnet", 8, 2, torch.Generator(), cpu)  # other data
    assert len(trained) == 2
    del real, first, again, copy, moved
    gc.collect()
    assert not features._LAST


@pytest.mark.parametrize(
    "name,extra", [("dm", {}), ("dc", {}), ("mtt", {}), ("mtt", {"soft_labels": True})]
)
def test_methods_start_from_kmeans(digits, name, extra, request, monkeypatch):
    from datadistill.methods import common

    picked = []
    original = common.kmeans_nearest

    def spy(x, k, seed):
        rows = original(x, k, seed)
        picked.append(x[rows])
        return rows

    monkeypatch.setattr(common, "kmeans_nearest", spy)
    hp = {**smoke_hparams(name, request), **extra, "init": "kmeans"}
    d0 = dd.distill(digits, name, ipc=3, seed=0, iterations=0, device="cpu", **hp)
    assert len(picked) == 10  # one k-means per class
    assert torch.equal(d0.images, torch.cat(picked))  # the set starts from its picks


@pytest.mark.parametrize("name", ["dm", "dc", "mtt"])
def test_methods_start_from_feature_kmeans(digits, name, request, monkeypatch):
    from datadistill.methods import common, features

    spaces, picks = [], []
    original_features, original_kmeans = features.all_class_features, common.kmeans_nearest

    def features_spy(*args):
        spaces.append(original_features(*args))
        return spaces[-1]

    def kmeans_spy(x, k, seed):
        picks.append(original_kmeans(x, k, seed))
        return picks[-1]

    monkeypatch.setattr(features, "all_class_features", features_spy)
    monkeypatch.setattr(common, "kmeans_nearest", kmeans_spy)
    hp = {**smoke_hparams(name, request), "init": "kmeans-features"}
    d0 = dd.distill(digits, name, ipc=2, seed=0, iterations=0, device="cpu", **hp)
    assert len(spaces) == 1 and len(picks) == 10  # one feature space, one k-means per class
    rows = torch.cat([idx[p] for (_, idx), p in zip(spaces[0], picks, strict=True)])
    assert torch.equal(d0.images, digits.train_x[rows])


def test_arch_is_stored_in_its_registered_spelling():
    """``ConvNet-BN`` and ``convnet_bn`` are one network, so one run for a checkpoint."""
    for method in ("dm", "dc", "herding"):
        assert create_method(method, arch="ConvNet-BN").hparams.arch == "convnet_bn"


@pytest.mark.parametrize("name", ["dm", "dc", "dsa", "herding"])
def test_width_is_refused_beside_another_architecture(name):
    """``width`` shapes the ConvNets that take one: set beside another network (or a
    ConvNet of fixed width) it would be recorded but not applied."""
    create_method(name, arch="lenet")  # the default width is fine
    for arch in ("lenet", "convnetw32"):
        with pytest.raises(ConfigError, match=f"models that take one .*; {arch} has its own"):
            create_method(name, arch=arch, width=64)


def test_width_shapes_the_convnet_variants(digits):
    """A batch-norm (or max-pooling, ...) ConvNet takes the method's width."""
    m = create_method("dm", arch="convnet_bn", width=16, batch_real=8)
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert m.net.embed(digits.train_x[:2]).shape[1] == 16 * 2 * 2  # 8 px pooled to 2 px maps


def test_dm_with_batch_norm_embeds_the_real_batch_whole(digits):
    """Chunks would give each its own batch statistics: an explicit real_chunk does not
    split a batch-norm network's real half."""
    m = create_method("dm", arch="convnet_bn", real_chunk=4, batch_real=8)
    m.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert m.real_chunk >= 80
    plain = create_method("dm", arch="convnet", real_chunk=4, batch_real=8)
    plain.setup(digits, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert plain.real_chunk == 4


@pytest.mark.parametrize("arch", ["convnet", "convnet_bn"])
def test_dm_synthetic_half_in_class_groups_equals_one_pass(digits, monkeypatch, arch):
    """A budget too small for all classes runs the synthetic half one class at a time: the
    update (through DSA and a multi-formation set) and the loss are those of one pass.
    Batch norm, whose statistics span the classes, keeps one pass."""
    from datadistill.methods import dm

    def one_step(budget: int | None):
        if budget is not None:
            monkeypatch.setattr(dm, "pass_elements", lambda device: budget)
        m = create_method("dm", **{**SMOKE_HPARAMS["dm"], "factor": 2, "arch": arch})
        m.setup(digits, 2, torch.Generator().manual_seed(0), torch.device("cpu"))
        calls, embed = [], m.embed
        m.embed = lambda x: (calls.append(x.shape[0]), embed(x))[1]
        start = [p.detach().clone() for p in m.synset.parameters()]
        loss = m.step()["loss"]
        return loss, start, [p.detach().clone() for p in m.synset.parameters()], calls

    loss_one, start, set_one, _ = one_step(None)
    loss_groups, _, set_groups, calls_groups = one_step(1)
    syn_calls = [n for n in calls_groups if n == 2 * 4]  # one class: 2 images x 4 tiles
    assert len(syn_calls) == (10 if arch == "convnet" else 0)
    assert not all(torch.equal(a, b) for a, b in zip(set_one, start, strict=True))
    assert abs(loss_groups - loss_one) <= 1e-5 * abs(loss_one)
    for a, b in zip(set_groups, set_one, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_dm_real_half_in_equal_capped_calls_equals_one_pass(digits):
    """A GPU's cap on images per call (here 7: 64 images per class in calls of 7 or
    fewer) gives the step of one call per chunk of 16."""
    out = []
    for cap in (0, 7):
        m = create_method("dm", **SMOKE_HPARAMS["dm"])
        m.setup(digits, 2, torch.Generator().manual_seed(0), torch.device("cpu"))
        m.real_cap = cap
        sizes = []
        embed = m.embed
        m.embed = lambda x, sizes=sizes, embed=embed: (sizes.append(x.shape[0]), embed(x))[1]
        loss = m.step()["loss"]
        out.append((loss, m.synset.images.detach().clone(), sizes))
    (loss_16, set_16, sizes_16), (loss_7, set_7, sizes_7) = out
    assert sizes_7[-1] == sizes_16[-1] == 20  # the synthetic half: 10 classes x 2 images
    assert max(sizes_7[:-1]) == 7 and max(sizes_16[:-1]) == 16  # the real half's calls
    assert abs(loss_7 - loss_16) <= 1e-5 * abs(loss_16)
    assert torch.allclose(set_7, set_16, atol=1e-6, rtol=1e-5)


def test_a_learned_lr_starts_on_the_images_device():
    images = torch.zeros(4, 1, 8, 8, device="meta")  # any device other than the CPU
    synset = dd.PixelSet(images, 2, lr=0.01)
    assert synset.lr is not None and synset.lr.device == images.device


@pytest.mark.parametrize(
    "method, hp, unused",
    [
        ("dc", {"net_real": 50}, "net_data='synthetic'"),
        ("dc", {"dsa_strategy": "color"}, "dsa=False"),
        ("dm", {"dsa": False, "dsa_strategy": "color"}, "dsa=False"),
        ("mtt", {"lr_label": 1.0}, "soft_labels=False"),
        ("mtt", {"momentum_label": 0.5}, "soft_labels=False"),
        ("mtt", {"label_epoch": 2}, "soft_labels=False"),
    ],
)
def test_a_hyperparameter_without_effect_says_so(method, hp, unused):
    """Set while its switch is off, a hyperparameter changes nothing: a warning says so."""
    with pytest.warns(UserWarning, match=f"no effect with {unused}"):
        create_method(method, **hp)


def test_no_warning_for_hyperparameters_that_apply():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_method("dc", net_data="real", net_real=50)
        create_method("dsa", dsa_strategy="color_crop")
        create_method("mtt", soft_labels=True, lr_label=1.0)
        create_method("dm", dsa=False, dsa_strategy="")  # switching DSA off twice is fine


@pytest.mark.parametrize("method, name", [("dm", "DM"), ("dsa", "DSA"), ("mtt", "MTT")])
def test_the_dsa_strategy_is_checked_with_the_method(method, name):
    with pytest.raises(ConfigError, match=f"'dsa_strategy' parameter of {name}: Unknown"):
        create_method(method, dsa_strategy="foo")
    # an empty strategy with DSA on augments nothing: said, not refused (such runs resume)
    with pytest.warns(UserWarning, match=f"of {name} names no augmentation") as seen:
        create_method(method, dsa_strategy="none")
    assert seen[0].filename == __file__  # the warning points at the caller's line
