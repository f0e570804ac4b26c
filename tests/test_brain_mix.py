"""The richer embedded MRI training distribution: reproducible draws, each augmentation, and no
voxel of the held-out axial slabs in any training item."""
import numpy as np
import pytest
import torch

from learn2invert.data import BrainSliceMix, brain, brain_mix
from learn2invert.data.brain_mix import _held_out_axial_levels, augment_magnitude, training_slice_pool
from learn2invert.train.config import load_config
from learn2invert.operators.generator import Measurement


def test_items_are_reproducible_per_epoch_and_differ_across_epochs():
    a, b = BrainSliceMix(size=32, length=6, seed=3), BrainSliceMix(size=32, length=6, seed=3)
    first = a[4]
    assert first.shape == (2, 32, 32) and first.dtype == torch.float32
    assert torch.equal(first, b[4]) and torch.equal(first, a[4 - 6])
    a.set_epoch(1)
    assert not torch.equal(first, a[4])
    b.set_epoch(1)
    assert torch.equal(a[4], b[4])
    with pytest.raises(IndexError):
        a[6]


def test_orientation_weights_select_pools():
    only_axial = BrainSliceMix(size=16, length=4, orientations={"axial": 1.0})
    assert list(only_axial.pools) == ["axial"] and len(only_axial.pools["axial"]) == 78
    with pytest.raises(ValueError, match="orientations"):
        BrainSliceMix(size=16, orientations={"oblique": 1.0})
    with pytest.raises(TypeError, match="rotaton"):
        BrainSliceMix(size=16, rotaton=5)


def test_no_training_item_contains_a_held_out_axial_level(monkeypatch):
    # A synthetic template: tissue everywhere, value 1 exactly on the validation/test levels.
    volume = np.full(brain.MNI152_SHAPE, 0.5, dtype=np.float32)
    monkeypatch.setattr(brain, "load_mni152", lambda: volume)
    monkeypatch.setattr(brain_mix, "load_mni152", lambda: volume)
    training_slice_pool.cache_clear()
    try:
        z0, z1 = _held_out_axial_levels()
        held_out = np.concatenate([brain.split_slice_indices("val"), brain.split_slice_indices("test")])
        assert z0 < held_out.min() and held_out.max() < z1
        volume[:, :, z0:z1] = 1.0
        for orientation in ("axial", "coronal", "sagittal"):
            pool = training_slice_pool(orientation)
            assert pool and max(float(s.max()) for s in pool) == 0.5, orientation
    finally:
        training_slice_pool.cache_clear()


def test_each_augmentation_changes_the_image_and_can_be_switched_off():
    image = torch.zeros(120, 100)
    image[30:90, 20:60] = 0.8  # an off-centre block: flips, rotations and shifts all move it
    off = dict(scale=0.5, scale_range=(1, 1), rotation=0, shift=0, elastic=0, flip=False, gamma_range=(1, 1), bias=0)
    plain = augment_magnitude(image, (64, 64), torch.Generator().manual_seed(0), **off)
    assert plain.shape == (1, 64, 64) and float(plain.max()) == pytest.approx(0.8, abs=1e-5)
    changes = {"scale_range": (0.6, 0.7), "rotation": 30, "shift": 0.2, "elastic": 3.0, "gamma_range": (2.0, 2.5),
               "bias": 0.5}
    for key, value in changes.items():
        changed = augment_magnitude(image, (64, 64), torch.Generator().manual_seed(0), **{**off, key: value})
        assert (changed - plain).abs().max() > 0.05, key
    # The flip happens for half of the generators.
    flipped = [not torch.equal(augment_magnitude(image, (64, 64), torch.Generator().manual_seed(s), **{**off, "flip": True}),
                               plain) for s in range(20)]
    assert 3 < sum(flipped) < 17
    with pytest.raises(ValueError, match="scale_range"):
        augment_magnitude(image, (64, 64), torch.Generator(), scale_range=(0, 1))


def test_photograph_items_mix_in_at_their_rate(monkeypatch):
    plain = BrainSliceMix(size=32, length=40, seed=1)
    assert all(torch.equal(plain[i], BrainSliceMix(size=32, length=40, seed=1, natural=0.0)[i]) for i in range(3))
    photos = BrainSliceMix(size=32, length=8, seed=1, natural=1.0)
    items = [photos[i] for i in range(8)]
    assert all(p.shape == (2, 32, 32) and torch.isfinite(p).all() for p in items)
    assert all(torch.equal(a, photos[i]) for i, a in enumerate(items))  # reproducible
    # A photograph crop has content across the whole field of view; brain slices have background.
    assert min(float((p.norm(dim=0) > 0.01).float().mean()) for p in items) > 0.6
    mixed = BrainSliceMix(size=32, length=200, seed=1, natural=0.3)
    calls = []
    original = BrainSliceMix._photograph
    monkeypatch.setattr(BrainSliceMix, "_photograph", lambda self, *a: calls.append(1) or original(self, *a))
    for i in range(200):
        mixed[i]
    assert 40 <= len(calls) <= 80
    with pytest.raises(ValueError, match="natural must be"):
        BrainSliceMix(size=16, natural=1.5)


def test_dead_leaves_items_mix_in_at_their_rate(monkeypatch):
    plain = BrainSliceMix(size=32, length=8, seed=1, natural=0.3)
    assert all(torch.equal(plain[i], BrainSliceMix(size=32, length=8, seed=1, natural=0.3, dead_leaves=0.0)[i])
               for i in range(8))  # runs made before the option draw the same items
    leaves = BrainSliceMix(size=32, length=6, seed=1, dead_leaves=1.0)
    items = [leaves[i] for i in range(6)]
    assert all(p.shape == (2, 32, 32) and torch.isfinite(p).all() for p in items)
    assert all(torch.equal(a, leaves[i]) for i, a in enumerate(items))  # reproducible
    # Content across the whole field of view, unlike a brain slice on its black background.
    magnitude = items[0].norm(dim=0)
    assert float((magnitude > 0.01).float().mean()) > 0.6
    calls = []
    original = BrainSliceMix._dead_leaves
    monkeypatch.setattr(BrainSliceMix, "_dead_leaves", lambda self, *a: calls.append(1) or original(self, *a))
    mixed = BrainSliceMix(size=16, length=200, seed=1, natural=0.3, dead_leaves=0.3)
    for i in range(200):
        mixed[i]
    assert 40 <= len(calls) <= 80
    with pytest.raises(ValueError, match="dead_leaves must be"):
        BrainSliceMix(size=16, natural=0.8, dead_leaves=0.3)


def test_fastmri_centre_fraction_follows_the_acceleration():
    def mask(acceleration, centre):
        config = load_config(None, ["operator.name=mri", f"operator.acceleration={acceleration}",
                                    f"operator.center_fraction={centre}", "operator.mask=random"])
        op = Measurement(config, (2, 64, 64))(torch.zeros(1, 2, 64, 64), torch.Generator().manual_seed(0))[1]
        return op.mask
    assert torch.equal(mask(4, "fastmri"), mask(4, 0.08))
    assert torch.equal(mask(8, "fastmri"), mask(8, 0.04))
