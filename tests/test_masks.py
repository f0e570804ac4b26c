"""Undersampling masks: fastMRI column masks and the RIM's Gaussian variable-density masks."""
import numpy as np
import pytest
import torch

from learn2invert.operators.masks import equispaced_mask, gaussian_mask, random_mask, sample_acceleration

W = 320  # a typical fastMRI knee width after cropping


@pytest.mark.parametrize("acceleration,center_fraction", [(4, 0.08), (8, 0.04)])
def test_random_mask_acceleration_over_seeds(acceleration, center_fraction):
    counts = np.array([int(random_mask((W,), acceleration, center_fraction, seed=s).sum()) for s in range(200)])
    # Expected count is exactly W / acceleration; the mean of 200 draws has std ~0.5 columns.
    assert abs(counts.mean() - W / acceleration) < 2.0
    assert counts.std() > 0  # the outer columns really are random


@pytest.mark.parametrize("fn", [random_mask, equispaced_mask])
@pytest.mark.parametrize("width,acceleration,center_fraction", [(320, 4, 0.08), (320, 8, 0.04), (37, 4, 0.08), (15, 4, 0.2)])
def test_centre_block_is_fully_sampled(fn, width, acceleration, center_fraction):
    num_low = round(width * center_fraction)
    pad = (width - num_low + 1) // 2
    for seed in range(5):
        mask = fn((width,), acceleration, center_fraction, seed=seed)
        assert mask.shape == (width,) and mask.dtype == torch.bool
        assert mask[pad : pad + num_low].all()
    assert pad <= width // 2 < pad + num_low  # the zero frequency (index W // 2) is in the block


def test_column_mask_shapes_broadcast():
    for fn in (random_mask, equispaced_mask):
        mask = fn((3, 2, 10, 16), 4, 0.08, seed=0)
        assert mask.shape == (1, 1, 1, 16)
        assert torch.broadcast_shapes(mask.shape, (3, 2, 10, 16)) == (3, 2, 10, 16)
    assert random_mask(torch.Size([10, 16]), 4, 0.08, seed=0).shape == (1, 16)


@pytest.mark.parametrize("fn,args", [
    (random_mask, (4, 0.08)),
    (equispaced_mask, (4, 0.08)),
    (gaussian_mask, (3.0,)),
])
def test_masks_are_reproducible_with_every_seed_type(fn, args):
    shape = (32, 64)
    same = [
        (fn(shape, *args, seed=7), fn(shape, *args, seed=7)),
        (fn(shape, *args, seed=np.random.default_rng(7)), fn(shape, *args, seed=np.random.default_rng(7))),
        (fn(shape, *args, seed=torch.Generator().manual_seed(7)), fn(shape, *args, seed=torch.Generator().manual_seed(7))),
    ]
    for a, b in same:
        assert torch.equal(a, b)
    distinct = {tuple(fn(shape, *args, seed=s).flatten().tolist()) for s in range(6)}
    assert len(distinct) > 1


@pytest.mark.parametrize("acceleration,center_fraction", [(4, 0.08), (8, 0.04), (4, 0.04)])
def test_equispaced_spacing(acceleration, center_fraction):
    num_low = round(W * center_fraction)
    pad = (W - num_low + 1) // 2
    spacing = acceleration * (num_low - W) / (num_low * acceleration - W)
    offsets_seen = set()
    for seed in range(8):
        mask = equispaced_mask((W,), acceleration, center_fraction, seed=seed).numpy()
        # The mask is the centre block plus round(offset + k * spacing) for one offset in [0, round(spacing)).
        matches = []
        for offset in range(round(spacing)):
            expected = np.zeros(W, dtype=bool)
            expected[pad : pad + num_low] = True
            expected[np.around(np.arange(offset, W - 1, spacing)).astype(int)] = True
            if np.array_equal(mask, expected):
                matches.append(offset)
        assert len(matches) == 1
        offsets_seen.add(matches[0])
        # Adjusted spacing makes the total about W / acceleration.
        assert abs(int(mask.sum()) - W / acceleration) <= 2
    assert len(offsets_seen) > 1  # the offset is random


def test_gaussian_mask_acceleration_density_and_centre():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        acceleration = sample_acceleration(generator=gen)
        assert 1.5 <= acceleration <= 5.2
        mask = gaussian_mask((48, 40), acceleration, seed=gen)
        assert mask.shape == (48, 40) and mask.dtype == torch.bool
        realised = mask.numel() / int(mask.sum())
        assert abs(realised - acceleration) / acceleration < 0.01
        assert mask[24, 20]  # zero frequency of centred k-space
    # Variable density: the low frequencies are sampled far more often than the high ones.
    mask = gaussian_mask((64, 64), 4, seed=1).numpy()
    yy, xx = np.mgrid[:64, :64]
    radius = np.hypot(yy - 32, xx - 32)
    inner, outer = mask[radius < 8].mean(), mask[radius > 24].mean()
    assert inner > 0.9 and outer < 0.1


def test_gaussian_mask_broadcast_shape():
    mask = gaussian_mask((2, 2, 16, 12), 4, seed=0)
    assert mask.shape == (1, 1, 16, 12)
    assert int(mask.sum()) == round(16 * 12 / 4)


def test_sample_acceleration_is_uniform_on_the_rim_range():
    rng = np.random.default_rng(0)
    draws = np.array([sample_acceleration(generator=rng) for _ in range(2000)])
    assert draws.min() >= 1.5 and draws.max() <= 5.2
    assert abs(draws.mean() - 3.35) < 0.1  # U(1.5, 5.2) has mean 3.35, std ~1.07
    assert sample_acceleration(generator=3) == sample_acceleration(generator=3)
    with pytest.raises(ValueError):
        sample_acceleration(low=1.0, high=2.0)
    with pytest.raises(ValueError):
        sample_acceleration(low=3.0, high=2.0)


@pytest.mark.parametrize("call", [
    lambda: random_mask((W,), 1, 0.08),
    lambda: random_mask((W,), 0.5, 0.08),
    lambda: random_mask((W,), float("nan"), 0.08),
    lambda: random_mask((W,), 4, 0.0),
    lambda: random_mask((W,), 4, 1.0),
    lambda: random_mask((W,), 4, 0.5),  # 160 centre columns > W / 4
    lambda: random_mask((), 4, 0.08),
    lambda: random_mask(W, 4, 0.08),
    lambda: random_mask((0,), 4, 0.08),
    lambda: random_mask((W,), 4, 0.08, seed="seven"),
    lambda: equispaced_mask((W,), 1, 0.08),
    lambda: equispaced_mask((W,), 4, -0.1),
    lambda: gaussian_mask((W,), 4),
    lambda: gaussian_mask((16, 16), 1.0),
])
def test_invalid_arguments_raise(call):
    with pytest.raises(ValueError):
        call()
