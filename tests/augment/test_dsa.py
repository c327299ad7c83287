"""DSA: config validation, sampling, Siamese application, modes, determinism."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from datadistill.augment import AUGMENTATIONS, DSA, DSAConfig
from datadistill.errors import ConfigError, UnknownNameError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_config_defaults_are_the_papers() -> None:
    cfg = DSAConfig()
    assert cfg.families == ("color", "crop", "cutout", "flip", "scale", "rotate")
    assert (cfg.mode, cfg.scale, cfg.rotate, cfg.crop, cfg.cutout) == (
        "single",
        1.2,
        15.0,
        0.125,
        0.5,
    )
    assert (cfg.brightness, cfg.saturation, cfg.contrast, cfg.flip) == (1.0, 2.0, 0.5, 0.5)
    assert cfg.without_flip().strategy == "color_crop_cutout_scale_rotate"
    assert DSAConfig(strategy="flip").without_flip().families == ()


def test_config_errors() -> None:
    with pytest.raises(
        UnknownNameError,
        match="Did you mean 'rotate'.*Valid augmentations: "
        "color, crop, cutout, flip, rotate, scale",
    ):
        DSAConfig(strategy="color_rotat")
    with pytest.raises(ConfigError, match="names a family twice"):
        DSAConfig(strategy="crop_crop")
    with pytest.raises(ConfigError, match="'mode' parameter of DSAConfig"):
        DSAConfig(mode="both")
    with pytest.raises(
        ConfigError,
        match=r"'flip' parameter of DSAConfig must be a number in "
        r"\[0, 1\]; got 2",
    ):
        DSAConfig(flip=2)
    with pytest.raises(ConfigError, match="'scale' parameter"):
        DSAConfig(scale=0.8)
    with pytest.raises(ConfigError, match="'groups' parameter"):
        DSA().sample(0, gen())
    with pytest.raises(ConfigError, match="'generator' parameter"):
        DSA().sample(2, 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="parameter groups"):
        DSA()(torch.zeros(3, 1, 4, 4), DSA().sample(2, gen()))


def test_sample_ranges_and_shapes() -> None:
    p = DSA().sample(4000, gen())
    assert p.groups == 4000 and p.crop.shape == (4000, 2) and p.scale.shape == (4000, 2)
    assert p.choice is not None and set(p.choice.tolist()) == set(range(6))
    assert p.brightness.abs().max() <= 0.5
    assert 0 <= p.saturation.min() and p.saturation.max() <= 2
    assert 0.5 <= p.contrast.min() and p.contrast.max() <= 1.5
    assert 1 / 1.2 <= p.scale.min() and p.scale.max() <= 1.2
    assert p.rotate.abs().max() <= 15 * torch.pi / 180
    assert p.flip.float().mean().item() == pytest.approx(0.5, abs=0.05)
    assert DSA(DSAConfig(mode="multiple")).sample(3, gen()).choice is None


def test_deterministic_and_no_global_rng() -> None:
    x = torch.randn(4, 3, 3, 8, 8)
    dsa = DSA()
    state = torch.get_rng_state()
    a = dsa(x, dsa.sample(4, gen(7)))
    b = dsa(x, dsa.sample(4, gen(7)))
    c = dsa(x, dsa.sample(4, gen(8)))
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(dsa.augment(x[:, 0], gen(3)), dsa.augment(x[:, 0], gen(3)))


def test_augment_takes_one_family_per_batch_as_the_reference() -> None:
    """A training batch: per-image parameters, one family (the first image's draw)."""
    dsa, x = DSA(), torch.randn(64, 3, 8, 8, generator=gen(2))
    params = dsa.sample(64, gen(5))
    assert params.choice is not None and len(set(params.choice.tolist())) > 1
    one = replace(params, choice=params.choice[:1].expand(64).clone())
    assert torch.equal(dsa.augment(x, gen(5)), dsa(x, one))


@pytest.mark.parametrize("mode", ["single", "multiple"])
@pytest.mark.parametrize("strategy", [*AUGMENTATIONS.names(), DSAConfig().strategy])
def test_siamese_same_params_same_augmentation(strategy: str, mode: str) -> None:
    """Real (G, 5, ...) and synthetic (G, 2, ...) batches share each group's transform."""
    dsa = DSA(DSAConfig(strategy=strategy, mode=mode))
    real = torch.randn(6, 5, 3, 8, 8, generator=gen(1))
    syn = torch.randn(6, 2, 3, 8, 8, generator=gen(2))
    syn[:, 1] = real[:, 3]  # the same image in both batches
    params = dsa.sample(6, gen())
    real_aug, syn_aug = dsa(real, params), dsa(syn, params)
    assert real_aug.shape == real.shape and syn_aug.shape == syn.shape
    torch.testing.assert_close(syn_aug[:, 1], real_aug[:, 3], rtol=0, atol=1e-6)
    assert not torch.equal(real_aug, real)  # the transform did something


def test_group_params_do_not_depend_on_batch_size() -> None:
    """Applying to a group's images one at a time or together gives the same result."""
    dsa = DSA()
    x = torch.randn(5, 4, 3, 8, 8, generator=gen(1))
    params = dsa.sample(5, gen())
    together = dsa(x, params)
    for n in range(4):
        torch.testing.assert_close(dsa(x[:, n : n + 1], params)[:, 0], together[:, n])


def test_single_mode_applies_exactly_one_family_per_group() -> None:
    dsa = DSA(DSAConfig())
    x = torch.randn(24, 2, 3, 8, 8, generator=gen(1))
    params = dsa.sample(24, gen(4))
    assert params.choice is not None and len(set(params.choice.tolist())) > 2
    out = dsa(x, params)
    for g in range(24):
        family = params.families[int(params.choice[g])]
        expected = AUGMENTATIONS.get(family)(x[g : g + 1], params.take(torch.tensor([g])))
        torch.testing.assert_close(out[g : g + 1], expected)


def test_multiple_mode_applies_all_families_in_order() -> None:
    dsa = DSA(DSAConfig(strategy="scale_color_flip", mode="multiple"))
    x = torch.randn(3, 2, 3, 8, 8, generator=gen(1))
    params = dsa.sample(3, gen())
    expected = x
    for family in ("scale", "color", "flip"):
        expected = AUGMENTATIONS.get(family)(expected, params)
    torch.testing.assert_close(dsa(x, params), expected)


def test_per_image_4d_input_equals_groups_of_one() -> None:
    dsa = DSA()
    x = torch.randn(10, 3, 8, 8, generator=gen(1))
    params = dsa.sample(10, gen())
    out = dsa(x, params)
    assert out.shape == x.shape
    torch.testing.assert_close(out, dsa(x[:, None], params)[:, 0])


def test_empty_strategy_is_the_identity() -> None:
    x = torch.randn(2, 3, 8, 8)
    for strategy in ("", "none"):
        dsa = DSA(DSAConfig(strategy=strategy))
        assert dsa.families == ()
        assert torch.equal(dsa(x, dsa.sample(2, gen())), x)


def test_gradient_reaches_synthetic_images_through_every_mode() -> None:
    for mode in ("single", "multiple"):
        dsa = DSA(DSAConfig(mode=mode))
        syn = torch.randn(10, 2, 1, 8, 8, generator=gen(1), requires_grad=True)
        dsa(syn, dsa.sample(10, gen())).square().sum().backward()
        assert syn.grad is not None and torch.isfinite(syn.grad).all()
        assert (syn.grad.flatten(1).abs().sum(1) > 0).all()


def test_params_to_and_take() -> None:
    p = DSA().sample(4, gen())
    q = p.to("cpu")
    assert torch.equal(q.rotate, p.rotate)
    t = p.take(torch.tensor([2, 0]))
    assert t.groups == 2 and torch.equal(t.scale, p.scale[[2, 0]])
    assert t.choice is not None and p.choice is not None
    assert torch.equal(t.choice, p.choice[[2, 0]])
    assert replace(p, flip=torch.ones(4, dtype=torch.bool)).flip.all()
    # a slice of consecutive groups (a class group) is the same as their indices
    by_slice, by_index = p.take(slice(1, 3)), p.take(torch.tensor([1, 2]))
    assert by_slice.groups == 2
    for name, value in by_index._tensor_fields().items():
        assert torch.equal(by_slice._tensor_fields()[name], value), name


def test_params_are_built_on_the_requested_device() -> None:
    """One copy of the draws, then the parameters are computed where they are used (on
    CUDA every separate copy waits for the queued work); the family choice stays on the
    CPU, and the values are those drawn on the CPU."""
    dsa = DSA()
    on_meta = dsa.sample(4, gen(), "meta")
    here = dsa.sample(4, gen())
    for name, value in on_meta._tensor_fields().items():
        assert value.device.type == ("cpu" if name == "choice" else "meta"), name
        assert value.shape == getattr(here, name).shape
    assert on_meta.choice is not None and here.choice is not None
    assert torch.equal(on_meta.choice, here.choice)
    u, cfg = torch.rand(4, 11, generator=gen()), dsa.config  # the draws, in their order
    assert torch.equal(here.brightness, (u[:, 0] - 0.5) * cfg.brightness)
    assert torch.equal(here.crop, u[:, 3:5]) and torch.equal(here.flip, u[:, 7] < cfg.flip)


def test_dtype_is_preserved() -> None:
    x = torch.randn(2, 3, 3, 8, 8, dtype=torch.float64)
    dsa = DSA(DSAConfig(mode="multiple"))
    assert dsa(x, dsa.sample(2, gen())).dtype == torch.float64
