"""Embedded natural images, ellipse / Shepp-Logan phantoms and user image folders."""
import socket

import numpy as np
import pytest
import torch
from skimage.color import rgb2gray

from learn2invert.data import image_folder, natural, phantoms
from learn2invert.data.image_folder import ImageFolder
from learn2invert.data.natural import (IMAGE_NAMES, TEST_IMAGES, TRAIN_IMAGES, NaturalPatches,
                                       TestImages, load_image)
from learn2invert.data.phantoms import (EllipsesDataset, random_ellipse_parameters,
                                        random_ellipses, rasterise_ellipses, shepp_logan)


def _dihedral(x):
    """The 8 images obtained from ``x`` (..., H, W) by right-angle rotations and a mirror."""
    out = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(-2, -1))
        out += [r, r.flip(-1)]
    return out


# ----------------------------------------------------------------------------- natural images


def test_every_image_loads_offline_grey_and_rgb(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a natural image tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    natural._cached_array.cache_clear()  # force real file reads under the network block
    assert natural.available_images() == IMAGE_NAMES
    assert len(IMAGE_NAMES) == 14
    for name in IMAGE_NAMES:
        grey, rgb = load_image(name), load_image(name, grey=False)
        assert grey.dtype == rgb.dtype == torch.float32, name
        assert grey.shape[0] == 1 and rgb.shape[0] == 3, name
        assert grey.shape[1:] == rgb.shape[1:] and min(grey.shape[1:]) >= 300, name
        for image in (grey, rgb):
            assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0, name
            assert float(image.std()) > 0.02, name  # a real picture, not a constant
        # Grey is the luminance of the RGB version (grey files are repeated into RGB).
        expected = rgb2gray(rgb.permute(1, 2, 0).numpy())
        np.testing.assert_allclose(grey[0].numpy(), expected, atol=1e-5, err_msg=name)
    assert tuple(load_image("camera").shape) == (1, 512, 512)
    assert tuple(load_image("chelsea", grey=False).shape) == (3, 300, 451)
    # 8-bit values survive exactly: camera's top-left pixel is 200/255 in skimage.data.
    assert load_image("camera")[0, 0, 0].item() == pytest.approx(200 / 255, abs=1e-6)


def test_load_image_returns_a_private_copy_and_rejects_unknown_names():
    a = load_image("coins")
    a.zero_()
    assert float(load_image("coins").max()) > 0.9
    with pytest.raises(KeyError, match="unknown natural image"):
        load_image("lena")


def test_split_is_fixed_disjoint_and_complete():
    assert set(TRAIN_IMAGES).isdisjoint(TEST_IMAGES)
    assert set(TRAIN_IMAGES) | set(TEST_IMAGES) == set(IMAGE_NAMES)
    assert TEST_IMAGES == ("camera", "chelsea", "coins", "gravel", "immunohistochemistry")
    assert NaturalPatches("test", 16, length=1).names == TEST_IMAGES
    assert NaturalPatches("train", 16, length=1).names == TRAIN_IMAGES
    with pytest.raises(ValueError, match="split"):
        NaturalPatches("val")


def test_patches_are_deterministic_and_come_from_the_split():
    a = NaturalPatches("test", patch_size=24, grey=False, length=6, seed=3)
    b = NaturalPatches("test", patch_size=24, grey=False, length=6, seed=3)
    items = [a[i] for i in range(len(a))]
    assert all(x.shape == (3, 24, 24) and x.dtype == torch.float32 for x in items)
    # Order of access does not matter: item i depends only on (seed, epoch, i).
    for i in reversed(range(len(b))):
        assert torch.equal(b[i], items[i])
    assert torch.equal(a[-1], items[-1])
    assert not torch.equal(NaturalPatches("test", 24, False, 6, seed=4)[0], items[0])
    b.set_epoch(1)
    assert not torch.equal(b[0], items[0])
    # Every patch is a window of one of the test images.
    sources = [load_image(n, grey=False) for n in TEST_IMAGES]
    for patch in items:
        assert any(_is_window_of(patch, s) for s in sources)


def _is_window_of(patch, image):
    """Whether ``patch`` (C, h, w) equals some window of ``image`` (C, H, W)."""
    h, w = patch.shape[-2:]
    # Candidates are the pixels equal to the patch's corner; only those are compared in full.
    for top, left in (image == patch[:, :1, :1]).all(0).nonzero().tolist():
        if torch.equal(image[:, top : top + h, left : left + w], patch):
            return True
    return False


def test_augmented_patch_is_a_symmetry_of_the_plain_patch():
    plain = NaturalPatches("train", 16, length=4, seed=7)
    augmented = NaturalPatches("train", 16, length=4, seed=7, augment=True)
    for i in range(4):
        assert any(torch.equal(augmented[i], t) for t in _dihedral(plain[i]))


def test_patches_larger_than_every_image_are_refused():
    with pytest.raises(ValueError, match="at least 2000x2000"):
        NaturalPatches("test", patch_size=2000)


def test_test_images_full_and_centre_cropped():
    full = TestImages()
    assert len(full) == 5 and full.names == TEST_IMAGES
    assert tuple(full[0].shape) == (1, 512, 512)
    cropped = TestImages(grey=False, size=(64, 80))
    assert all(tuple(x.shape) == (3, 64, 80) for x in cropped)
    coins = load_image("coins", grey=False)  # 303 x 384: offsets (119, 152)
    torch.testing.assert_close(cropped[2], coins[:, 119:183, 152:232], rtol=0, atol=0)
    with pytest.raises(ValueError, match="chelsea"):
        TestImages(size=400)


# ----------------------------------------------------------------------------------- phantoms


def test_random_ellipses_range_and_reproducibility():
    x = random_ellipses(64, rng=5)
    assert x.shape == (1, 64, 64) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == pytest.approx(1.0)
    assert torch.equal(x, random_ellipses(64, rng=np.random.default_rng(5)))
    assert not torch.equal(x, random_ellipses(64, rng=6))


def test_ellipse_parameters_follow_the_dival_distribution():
    rng = np.random.default_rng(0)
    draws = [random_ellipse_parameters(rng) for _ in range(300)]
    counts = np.array([len(d) for d in draws])
    assert abs(counts.mean() - 40) < 1.5 and counts.max() <= 70
    p = np.concatenate(draws)
    assert p[:, 0].min() >= -0.4 and p[:, 0].max() <= 1.0
    assert abs(p[:, 0].mean() - 0.3) < 0.02  # U(-0.4, 1) mean
    assert abs(p[:, 1:3].mean() - 0.2) < 0.01  # 0.2 * Exp(1) mean
    assert np.abs(p[:, 3:5]).max() <= 0.9
    assert p[:, 5].min() >= 0 and p[:, 5].max() <= 2 * np.pi


def test_rasteriser_geometry():
    size = 101  # pixel centres at -1, -0.98, ..., 1
    # Centres off the pixel grid, so no pixel centre lies exactly on the boundary.
    ellipse = np.array([[0.7, 0.5, 0.2, 0.21, -0.11, 0.0]])
    image = rasterise_ellipses(ellipse, size)
    assert set(np.unique(image)) == {0.0, 0.7}
    rows, cols = np.nonzero(image)
    # Axis 0 is x: x in [-0.29, 0.71] -> rows 36..85; y in [-0.31, 0.09] -> columns 35..54.
    assert (rows.min(), rows.max()) == (36, 85) and (cols.min(), cols.max()) == (35, 54)
    area = (image > 0).sum() * (2 / (size - 1)) ** 2
    assert area == pytest.approx(np.pi * 0.5 * 0.2, rel=0.03)
    # A quarter turn of a centred ellipse swaps the axes, i.e. transposes the image.
    centred = rasterise_ellipses([[1, 0.5, 0.2, 0, 0, 0]], size)
    turned = rasterise_ellipses([[1, 0.5, 0.2, 0, 0, np.pi / 2]], size)
    np.testing.assert_array_equal(turned, centred.T)
    # Overlaps add.
    both = rasterise_ellipses([[1, 0.5, 0.5, 0, 0, 0], [-0.4, 0.1, 0.1, 0, 0, 0]], size)
    assert both[50, 50] == pytest.approx(0.6)


def test_ellipses_dataset_random_access_and_splits():
    train = EllipsesDataset(32, length=4, seed=1)
    assert len(train) == 4 and len(EllipsesDataset(32, split="test")) == 3200
    first = train[0]
    assert first.shape == (1, 32, 32)
    assert torch.equal(EllipsesDataset(32, length=4, seed=1)[0], first)
    assert not torch.equal(train[1], first)
    assert not torch.equal(EllipsesDataset(32, length=4, seed=1, split="validation")[0], first)
    train.set_epoch(2)
    assert not torch.equal(train[0], first)
    with pytest.raises(ValueError, match="split"):
        EllipsesDataset(split="val")


def test_shepp_logan_shape_and_range():
    x = shepp_logan(64)
    assert x.shape == (1, 64, 64) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and 0.9 < float(x.max()) <= 1.0
    # Background corners are 0, the brain's interior is grey (0.2 in the modified phantom).
    assert float(x[0, 0, 0]) == 0.0 and float(x[0, 32, 32]) == pytest.approx(0.2, abs=0.05)
    assert tuple(shepp_logan(400).shape) == (1, 400, 400)


# ------------------------------------------------------------------------------- image folder


def _write_png(path, array):
    from skimage.io import imsave

    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(str(path), array, check_contrast=False)


def test_image_folder_reads_sorted_images(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    rgb = rng.integers(0, 256, (24, 26, 3), dtype=np.uint8)
    _write_png(tmp_path / "b.png", grey)
    _write_png(tmp_path / "a" / "photo.PNG", rgb)
    (tmp_path / "notes.txt").write_text("not an image")

    ds = ImageFolder(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in ds.files] == ["a/photo.PNG", "b.png"]
    np.testing.assert_allclose(ds[1][0].numpy(), grey / 255.0, atol=1e-6)
    np.testing.assert_allclose(ds[0][0].numpy(), rgb2gray(rgb), atol=1e-5)

    colour = ImageFolder(tmp_path, grey=False)
    np.testing.assert_allclose(colour[0].numpy(), np.moveaxis(rgb, -1, 0) / 255.0, atol=1e-6)
    assert tuple(colour[1].shape) == (3, 30, 40)  # grey file repeated into RGB

    crops = ImageFolder(tmp_path, patch_size=16, seed=2)
    assert torch.equal(crops[1], ImageFolder(tmp_path, patch_size=16, seed=2)[1])
    assert tuple(crops[1].shape) == (1, 16, 16)
    centre = ImageFolder(tmp_path, patch_size=(10, 20), crop="center")
    np.testing.assert_allclose(centre[1][0].numpy(), grey[10:20, 10:30] / 255.0, atol=1e-6)
    with pytest.raises(ValueError, match="photo.PNG"):
        ImageFolder(tmp_path, patch_size=28)[0]


def test_image_folder_names_a_corrupt_file(tmp_path):
    _write_png(tmp_path / "good.png", np.zeros((8, 8), dtype=np.uint8))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    ds = ImageFolder(tmp_path)
    assert ds[1].shape == (1, 8, 8)
    with pytest.raises(ValueError, match="broken.png"):
        ds[0]


def test_read_image_counts_nan_and_inf_and_warns_about_colour_only_when_asked(tmp_path):
    import warnings

    from skimage.io import imsave

    values = np.random.default_rng(0).random((6, 7)).astype(np.float32)
    values[0, :2] = np.nan
    values[3, 3] = np.inf
    imsave(tmp_path / "holes.tif", values, check_contrast=False)
    # Not clipped to [0, 1] and not passed on as NaN: refused before the conversion.
    with pytest.raises(ValueError, match=r"holes.tif contains 2 NaN and 1 infinite"):
        image_folder.read_image(tmp_path / "holes.tif")
    rgb = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    _write_png(tmp_path / "photo.png", rgb)
    with pytest.warns(UserWarning, match=r"photo.png is a colour image; it was converted to grey"):
        grey = image_folder.read_image(tmp_path / "photo.png", warn_colour=True)
    np.testing.assert_allclose(grey[0], rgb2gray(rgb), atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # datasets convert colour photographs on purpose: no warning
        image_folder.read_image(tmp_path / "photo.png")
        image_folder.read_image(tmp_path / "photo.png", grey=False, warn_colour=True)
        _write_png(tmp_path / "grey_rgb.png", np.repeat(rgb[..., :1], 3, axis=-1))
        image_folder.read_image(tmp_path / "grey_rgb.png", warn_colour=True)


def test_image_folder_empty_or_missing_folder(tmp_path):
    (tmp_path / "readme.md").write_text("no images here")
    with pytest.raises(ValueError, match=str(tmp_path)):
        ImageFolder(tmp_path)
    with pytest.raises(ValueError, match="missing"):
        ImageFolder(tmp_path / "missing")


def test_as_chw_float32_converts_types():
    rgba = np.full((4, 5, 4), 255, dtype=np.uint8)
    assert image_folder.as_chw_float32(rgba, grey=False).shape == (3, 4, 5)
    sixteen = np.full((4, 5), 65535, dtype=np.uint16)
    assert image_folder.as_chw_float32(sixteen).max() == 1.0
    with pytest.raises(ValueError, match="shape"):
        image_folder.as_chw_float32(np.zeros((2, 3, 4, 5)))


def test_module_exports():
    from learn2invert import data

    assert data.NaturalPatches is NaturalPatches and data.ImageFolder is ImageFolder
    assert data.shepp_logan is shepp_logan and phantoms.EllipsesDataset is EllipsesDataset


def test_dead_leaves_cover_the_image_with_flat_disks_of_power_law_radii():
    from learn2invert.data.dead_leaves import _power_law_radius, dead_leaves

    image = dead_leaves(48, np.random.default_rng(0))
    assert image.shape == (1, 48, 48) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert np.array_equal(image, dead_leaves(48, np.random.default_rng(0)))  # same generator state, same image
    # Flat regions: most neighbouring pixels are equal (the same disk), unlike noise.
    assert np.mean(image[0, :, 1:] == image[0, :, :-1]) > 0.5
    assert len(np.unique(image)) > 5
    # The radii follow p(r) ~ r^-3 on [1, 8]: P(r < 2) = (1 - 1/4) / (1 - 1/64).
    rng = np.random.default_rng(1)
    radii = np.array([_power_law_radius(rng, 1.0, 8.0) for _ in range(20000)])
    assert 1.0 <= radii.min() and radii.max() <= 8.0
    assert abs(np.mean(radii < 2.0) - 0.75 / (63 / 64)) < 0.01
    blurred = dead_leaves(48, np.random.default_rng(0), blur=1.0)
    assert np.abs(np.diff(blurred[0], axis=1)).max() < np.abs(np.diff(image[0], axis=1)).max()


def test_dead_leaves_items_replace_a_fraction_of_the_crops_for_training_only():
    from learn2invert.train.config import load_config
    from learn2invert.train.datasets import natural_patches

    plain = NaturalPatches(length=64, seed=3)
    assert all(torch.equal(plain[i], NaturalPatches(length=64, seed=3, dead_leaves=0.0)[i]) for i in range(64))
    from learn2invert.data.dead_leaves import dead_leaves
    from learn2invert.data.image_folder import index_rng

    mixed = NaturalPatches(length=200, seed=3, dead_leaves=0.5)
    synthetic = 0
    for i in range(200):  # item i draws "synthetic?" first from its own (seed, epoch, i) generator
        rng = index_rng(3, 0, i)
        if rng.random() < 0.5:
            synthetic += 1
            expected = dead_leaves(32, rng, r_min=2.0, r_max=128.0, blur=float(rng.uniform(0.0, 1.0)))
            assert np.array_equal(mixed[i].numpy(), expected)
    assert 80 <= synthetic <= 120  # about half
    assert NaturalPatches(length=4, seed=3, dead_leaves=1.0, grey=False)[0].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="dead_leaves"):
        NaturalPatches(dead_leaves=1.5)
    config = load_config(None, ["data.name=natural_patches", "data.params={dead_leaves: 1.0}"])
    train = natural_patches(config, {"dead_leaves": 1.0}, "train", 0, 8)
    val = natural_patches(config, {"dead_leaves": 1.0}, "val", 0, 8)
    assert train.dead_leaves == 1.0 and val.dead_leaves == 0.0  # validation and test stay photographs
