"""Multi-formation (IDC): the decode / encode maths, the synthetic set, and its artefact."""

import numpy as np
import pytest
import torch

import datadistill as dd
from datadistill.errors import ConfigError
from datadistill.methods.common import init_synset
from datadistill.synthetic import MultiFormationSet, check_factor, decode, encode
from datadistill.synthetic.formation import at_tile_resolution, decode_rows


def _quadrants(values):
    """One (1, 4, 4) image whose 2x2 quadrants hold ``values`` row by row."""
    img = torch.empty(1, 4, 4)
    img[:, :2, :2], img[:, :2, 2:], img[:, 2:, :2], img[:, 2:, 2:] = values
    return img


def test_decode_cuts_tiles_in_row_major_order_and_upsamples_them():
    stored = torch.stack([_quadrants([1.0, 2.0, 3.0, 4.0]), _quadrants([5.0, 6.0, 7.0, 8.0])])
    out = decode(stored, 2)
    assert out.shape == (8, 1, 4, 4)
    # bilinear upsampling of a constant tile is that constant
    expected = torch.arange(1.0, 9.0)[:, None, None, None].expand(8, 1, 4, 4)
    torch.testing.assert_close(out, expected)
    assert decode(stored, 1) is stored


def test_encode_tiles_downsampled_images_and_decode_inverts_it_at_low_resolution():
    consts = torch.arange(1.0, 9.0)[:, None, None, None].expand(8, 1, 4, 4).contiguous()
    stored = encode(consts, 2)
    assert stored.shape == (2, 1, 4, 4)
    torch.testing.assert_close(stored[0], _quadrants([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(decode(stored, 2), consts)
    # a generic image: each tile is the area mean of its 2x2 blocks
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    tile = torch.nn.functional.avg_pool2d(x, 2)  # (4, 3, 4, 4)
    s = encode(x, 2)[0]
    torch.testing.assert_close(s[:, :4, :4], tile[0])
    torch.testing.assert_close(s[:, :4, 4:], tile[1])
    torch.testing.assert_close(s[:, 4:, :4], tile[2])
    torch.testing.assert_close(s[:, 4:, 4:], tile[3])


def test_decode_is_differentiable_in_every_stored_pixel():
    stored = torch.randn(3, 2, 6, 6, requires_grad=True)
    decode(stored, 3).square().sum().backward()
    assert stored.grad is not None and bool((stored.grad != 0).all())


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_decode_rows_is_decode_then_index_in_values_and_gradients(factor):
    g = torch.Generator().manual_seed(0)
    # repeats, any order, and stored images left out (1, 3 and 5 of 6 at factor 2)
    idx = torch.tensor([21, 4, 21, 13, 5]) if factor > 1 else torch.tensor([5, 0, 5, 3, 1])
    a = torch.randn(6, 3, 8, 8, generator=g, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    w = torch.randn(len(idx), 3, 8, 8, generator=g)
    out_a, out_b = decode_rows(a, idx, factor), decode(b, factor)[idx]
    torch.testing.assert_close(out_a, out_b)
    (out_a * w).sum().backward()
    (out_b * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_at_tile_resolution_is_what_a_stored_tile_decodes_to():
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    via_set = decode(encode(x.repeat_interleave(4, dim=0), 2), 2)[::4]
    torch.testing.assert_close(at_tile_resolution(x, 2), via_set)
    assert at_tile_resolution(x, 1) is x


@pytest.mark.parametrize("factor,message", [(3, "does not divide the 8x8"), (0, ">= 1")])
def test_bad_factor_is_a_config_error(factor, message):
    with pytest.raises(ConfigError, match=message):
        check_factor(factor, (8, 8))
    with pytest.raises(ConfigError, match=r"one of \[2, 4, 8\]"):
        check_factor(3, (8, 8))


@pytest.mark.parametrize("method", ["random", "herding", "kcenter", "dm", "dc"])
def test_a_bad_factor_names_the_method_it_was_given_to(method):
    from datadistill.methods import METHODS

    name = {"dm": "DM", "dc": "DC"}.get(method, method)
    with pytest.raises(ConfigError, match=f"The 'factor' parameter of {name} must be an int"):
        METHODS.get(method).hparams_class(factor=0)


def test_multiformation_set_materializes_class_major_training_images(digits):
    g = torch.Generator().manual_seed(0)
    synset = init_synset(digits, 2, "real", g, factor=2)
    assert isinstance(synset, MultiFormationSet)
    stored, stored_labels, _ = synset.stored()
    assert stored.shape == (20, 1, 8, 8) and stored is synset.images
    images, labels, soft = synset.materialize()
    assert images.shape == (80, 1, 8, 8) and soft is None
    assert labels.tolist() == [c for c in range(10) for _ in range(8)]
    assert synset.class_images().shape == (10, 8, 1, 8, 8)
    assert [p.shape for p in synset.parameters()] == [stored.shape]
    with pytest.raises(ConfigError, match="needs 640 images per class"):
        init_synset(digits, 10, "real", g, factor=8)


def test_dm_with_multiformation_round_trips_and_trains_on_decoded_images(digits, tmp_path):
    d = dd.distill(
        digits, "dm", ipc=2, iterations=3, seed=0, width=16, batch_real=32, compile="no", factor=2
    )
    assert d.factor == 2 and d.ipc == 2 and d.images.shape[0] == 20
    assert d.manifest["synset"] == {
        "name": "multiformation",
        "ipc": 2,
        "num_classes": 10,
        "factor": 2,
    }
    back = dd.load(d.save(tmp_path / "a.safetensors"))
    assert back.factor == 2 and torch.equal(back.images, d.images)
    assert back.manifest["num_training_images"] == 80
    assert back.manifest["format_version"] == 2  # an older reader must not take tiles as images
    images, labels, _ = back.training_set()
    assert images.shape == (80, 1, 8, 8) and len(back.as_dataset()) == 80
    report = dd.evaluate(back, digits, protocol="fast", seeds=1, full=False, baselines=False)
    assert report.ipc == 2  # the storage budget, which the random subset matches
    out = dd.export(back, tmp_path / "x.npz", fmt="npz")
    with np.load(out) as z:
        assert z["x"].shape == (80, 8, 8, 1) and z["y"].tolist() == labels.tolist()


def test_a_whitened_multiformation_set_is_shown_tile_by_tile():
    """Whitening mixes every pixel of an image, so the grid's picture of a stored mosaic of
    whitened tiles is its training images un-whitened one by one, then tiled at tile
    resolution; un-whitening the mosaic as one image blends the tiles together."""
    real = dd.load_dataset("digits", zca=True)
    d = dd.distill(real, "random", 1, seed=0, factor=2, device="cpu")
    decoded = d.pixels(decoded=True)
    assert decoded.shape == (40, 1, 8, 8)
    shown = d.pixels()
    assert shown.shape == (10, 1, 8, 8)
    torch.testing.assert_close(shown, encode(decoded, 2))
    from datadistill.data.real import to_pixels

    blended = to_pixels(d.images, d.info, d.zca)  # the mosaic un-whitened as one image
    assert (blended - shown).abs().mean() > 0.1
    # without whitening the stored pixels are shown as stored (un-normalising is per pixel)
    plain = dd.distill(dd.load_dataset("digits"), "random", 1, seed=0, factor=2, device="cpu")
    torch.testing.assert_close(plain.pixels(), to_pixels(plain.images, plain.info, None))


def test_dc_accepts_a_factor(digits):
    d = dd.distill(
        digits,
        "dc",
        ipc=1,
        iterations=1,
        seed=0,
        width=16,
        batch_real=16,
        outer_loop=2,
        inner_loop=1,
        compile="no",
        factor=2,
    )
    assert d.factor == 2 and d.training_set()[0].shape == (40, 1, 8, 8)


@pytest.mark.parametrize("method", ["random", "herding", "kcenter"])
def test_coreset_baselines_take_a_factor(digits, method):
    from datadistill.methods import create_method

    hp = {"train_steps": 5, "width": 16} if method != "random" else {}
    m = create_method(method, factor=2, **hp)
    m.setup(digits, 2, torch.Generator().manual_seed(0), torch.device("cpu"))
    # 2 stored images per class, each tiling 4 picks: 8 distinct picks of the class
    assert m.indices.shape == (10, 8)
    for c in range(10):
        assert (digits.train_y[m.indices[c]] == c).all() and m.indices[c].unique().numel() == 8
    picked = digits.train_x[m.indices.flatten()]
    assert torch.allclose(m.synthetic().images, encode(picked, 2))
    x, y, _ = m.synthetic().materialize()
    assert torch.allclose(x, decode(encode(picked, 2), 2))
    assert torch.equal(y, torch.arange(10).repeat_interleave(8))
    d = dd.distill(digits, method, ipc=2, seed=0, factor=2, **hp)
    assert d.factor == 2 and d.ipc == 2 and d.pixels().shape == (20, 1, 8, 8)
    assert d.training_set()[0].shape == (80, 1, 8, 8)


def test_coreset_factor_must_divide_the_images(digits):
    with pytest.raises(ConfigError, match="factor"):
        dd.distill(digits, "random", ipc=1, seed=0, factor=3)


def test_random_with_a_factor_too_large_for_a_class_is_refused(digits):
    with pytest.raises(ConfigError, match="needs 160 images per class"):
        dd.distill(digits, "random", ipc=40, seed=0, factor=2)
    with pytest.raises(ConfigError, match="needs 160 images per class"):
        dd.distill(digits, "dm", ipc=40, iterations=1, factor=2, init="kmeans", compile="no")
    # a noise start needs no real images: only the IPC the random baseline draws is bounded
    smallest = min(digits.class_counts("train"))
    assert 40 * 4 > smallest >= 40
    d = dd.distill(
        digits, "dm", ipc=40, iterations=1, factor=2, init="noise", width=16, compile="no"
    )
    assert d.images.shape[0] == 400 and d.factor == 2
    with pytest.raises(ConfigError, match="IPC .* exceeds the smallest class"):
        dd.distill(digits, "dm", ipc=smallest + 1, iterations=1, init="noise", compile="no")
