"""ZCA whitening: round trip, whitening, state dict, and through load_dataset."""

from __future__ import annotations

import pytest
import torch

from datadistill.data import ZCA, load_dataset
from datadistill.errors import ConfigError, DataError
from tests.data.fabricate import write_idx_set


def _correlated(n=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 12, generator=g) @ torch.randn(12, 12, generator=g)  # correlated
    return base.reshape(n, 3, 2, 2)


def test_round_trip_and_shapes():
    x = _correlated()
    zca = ZCA.fit(x, eps=0.1)
    z = zca.transform(x)
    assert z.shape == x.shape and zca.matrix.shape == (12, 12) and zca.mean.shape == (12,)
    assert torch.allclose(zca.inverse_transform(z), x, atol=1e-4)


def test_whitening_gives_identity_covariance_for_small_eps():
    x = _correlated()
    z = ZCA.fit(x, eps=1e-6).transform(x).reshape(len(x), -1).double()
    zc = z - z.mean(0)
    cov = zc.T @ zc / len(z)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(ZCA.fit(x, eps=1e-6).matrix, ZCA.fit(x, eps=1e-6).matrix.T, atol=1e-5)


def test_state_dict_round_trip_and_errors():
    zca = ZCA.fit(_correlated(), eps=0.1)
    back = ZCA.from_state_dict(zca.state_dict(), eps=0.1)
    x = _correlated(seed=1)
    assert torch.equal(back.transform(x), zca.transform(x)) and back.eps == 0.1
    with pytest.raises(ConfigError, match="C\\*H\\*W = 12"):
        zca.transform(torch.zeros(2, 1, 3, 3))
    with pytest.raises(ConfigError, match="eps"):
        ZCA.fit(_correlated(), eps=0.0)


def test_load_dataset_zca_whitens_all_splits(tmp_path):
    write_idx_set(tmp_path / "mnist", n_train=60)
    real = load_dataset("mnist", tmp_path, zca=True, zca_eps=0.1, download=False)
    plain = load_dataset("mnist", tmp_path, download=False)
    assert real.info.zca is True and real.info.zca_eps == 0.1 and real.zca is not None
    assert torch.allclose(real.test_x, real.zca.transform(plain.test_x), atol=1e-4)
    assert torch.allclose(real.train_x, real.zca.transform(plain.train_x), atol=1e-4)
    assert not torch.allclose(real.train_x, plain.train_x, atol=1e-2)  # it did whiten
    # fitted on the training split alone: validation and test images never shape it
    alone = ZCA.fit(plain.train_x, eps=0.1)
    assert torch.allclose(
        real.zca.transform(plain.test_x), alone.transform(plain.test_x), atol=1e-4
    )
    pixels = real.denormalize(real.val_x)
    assert torch.allclose(pixels, plain.denormalize(plain.val_x), atol=1e-4)
    assert torch.allclose(real.normalize(pixels), real.val_x, atol=1e-3)


def test_zca_on_fewer_images_than_dimensions_warns(tmp_path):
    """Fewer training images than values per image: the whitening is mostly eps; said."""
    import numpy as np

    from datadistill.data import load_dataset

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)  # 40 images, 64 values each
    np.savez(tmp_path / "small.npz", x=x, y=np.arange(40) % 2)
    with pytest.warns(UserWarning, match="no more images than dimensions"):
        real = load_dataset(f"npz:{tmp_path / 'small.npz'}", zca=True, val_size=0)
    assert real.val_x.shape[0] == 0  # an empty split is whitened too (it used to raise)
    assert load_dataset("digits", zca=True, val_size=0).val_x.shape == (0, 1, 8, 8)


def test_a_fitted_zca_is_exactly_symmetric_and_packs_into_one_triangle():
    from datadistill.data.zca import pack_symmetric, unpack_symmetric

    real = load_dataset("digits")  # where the plain product is not symmetric in float32
    x = real.train_x.reshape(real.train_x.shape[0], -1).double()
    s, u = torch.linalg.eigh(torch.cov(x.T, correction=0))
    plain = ((u * (s.clamp_min(0) + 0.1).sqrt()) @ u.T).float()
    assert not torch.equal(plain, plain.T)
    zca = ZCA.fit(real.train_x)
    assert torch.equal(zca.inverse, zca.inverse.T) and torch.equal(zca.matrix, zca.matrix.T)
    packed = pack_symmetric(zca.inverse)
    assert packed.shape == (64 * 65 // 2,)
    assert torch.equal(packed[:64], zca.inverse[0])  # row by row: the first row first
    assert torch.equal(unpack_symmetric(packed, 64), zca.inverse)
    with pytest.raises(DataError, match="2080 values"):
        unpack_symmetric(packed[:-1], 64)
    with pytest.raises(DataError, match="square"):
        pack_symmetric(zca.inverse[:3])


def test_a_matrix_computed_from_the_inverse_is_shared_by_copies_and_usable_with_autograd():
    fitted = ZCA.fit(_correlated(), eps=0.1)
    lazy = ZCA(None, fitted.inverse, fitted.mean, eps=0.1)  # as an artefact loads it
    copy = lazy.to("cpu")
    with torch.inference_mode():  # first needed there, e.g. while evaluating
        w = copy.matrix
    assert not w.is_inference() and lazy._matrix is w  # computed once, by the source
    assert torch.allclose(w, fitted.matrix, atol=1e-5)
    x = _correlated(n=4, seed=2).requires_grad_()
    copy.transform(x).square().sum().backward()  # an inference tensor would refuse this
    assert x.grad is not None and x.grad.shape == x.shape


def test_a_whitened_sets_pixels_are_its_images_unwhitened():
    """`pixels()` (grid, export) shows what a whitened set's images look like: a random
    subset of whitened digits shows as those digits' own pixels."""
    import datadistill as dd

    real = load_dataset("digits", zca=True, val_size=0)
    plain = load_dataset("digits", val_size=0)
    d = dd.distill(real, "random", ipc=2, seed=0, device="cpu")
    rows = [int((real.train_x - img).flatten(1).abs().amax(1).argmin()) for img in d.images]
    expected = plain.denormalize(plain.train_x[rows])
    assert torch.allclose(d.pixels(), expected, atol=1e-4)
    assert not torch.allclose(d.pixels(), plain.denormalize(d.images).clamp(0, 1), atol=1e-2)
