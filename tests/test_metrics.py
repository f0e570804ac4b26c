"""PSNR / SSIM / NMSE against scikit-image (which fastmri.evaluate calls) on real images."""
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import data
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from learn2invert import metrics

TOL = 1e-4


@pytest.fixture(scope="module")
def camera():
    """Grey camera crop in [0, 1] (float64, 192x160) with a noisy and a blurred estimate."""
    target = data.camera()[100:292, 150:310].astype(np.float64) / 255.0
    rng = np.random.default_rng(0)
    noisy = target + 0.05 * rng.standard_normal(target.shape)
    blurred = gaussian_filter(target, sigma=1.5)
    return target, noisy, blurred


@pytest.fixture(scope="module")
def astronaut():
    """RGB astronaut crop in [0, 1] (H, W, 3) with a noisy estimate."""
    target = data.astronaut()[40:200, 160:320].astype(np.float64) / 255.0
    rng = np.random.default_rng(1)
    return target, target + 0.03 * rng.standard_normal(target.shape)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("which", [1, 2])
def test_grey_image_matches_skimage(camera, which):
    target, estimate = camera[0], camera[which]
    dr = target.max()
    assert metrics.psnr(_t(estimate), _t(target)) == pytest.approx(peak_signal_noise_ratio(target, estimate, data_range=dr), abs=TOL)
    assert metrics.ssim(_t(estimate), _t(target)) == pytest.approx(structural_similarity(target, estimate, data_range=dr), abs=TOL)
    expected_nmse = normalized_root_mse(target, estimate, normalization="euclidean") ** 2
    assert metrics.nmse(_t(estimate), _t(target)) == pytest.approx(expected_nmse, rel=TOL)
    # The (B, C, H, W) layout gives the same numbers as (H, W).
    assert metrics.ssim(_t(estimate)[None, None], _t(target)[None, None]) == pytest.approx(
        metrics.ssim(_t(estimate), _t(target)), abs=1e-12)


def test_float32_input_still_matches(camera):
    target, noisy, _ = camera
    got = metrics.ssim(_t(noisy).float(), _t(target).float())
    assert got == pytest.approx(structural_similarity(target, noisy.astype(np.float32).astype(np.float64),
                                                      data_range=float(np.float32(target.max()))), abs=TOL)


def test_rgb_image_averages_channels_like_skimage(astronaut):
    target, estimate = astronaut
    dr = target.max()
    est_t = _t(estimate).permute(2, 0, 1)[None]  # (1, 3, H, W)
    tgt_t = _t(target).permute(2, 0, 1)[None]
    expected = structural_similarity(target, estimate, data_range=dr, channel_axis=-1)
    assert metrics.ssim(est_t, tgt_t) == pytest.approx(expected, abs=TOL)
    assert metrics.psnr(est_t, tgt_t) == pytest.approx(peak_signal_noise_ratio(target, estimate, data_range=dr), abs=TOL)


def test_explicit_data_range(camera):
    target, noisy, _ = camera
    assert metrics.ssim(_t(noisy), _t(target), data_range=2.0) == pytest.approx(
        structural_similarity(target, noisy, data_range=2.0), abs=TOL)
    assert metrics.psnr(_t(noisy), _t(target), data_range=2.0) == pytest.approx(
        peak_signal_noise_ratio(target, noisy, data_range=2.0), abs=TOL)


def test_batch_mean_and_per_sample_values(camera):
    target, noisy, blurred = camera
    # The second sample is brighter: its data_range must be its own max, not the batch max.
    targets = np.stack([target, 3.0 * target])[:, None]
    estimates = np.stack([noisy, 3.0 * blurred])[:, None]
    expected = {
        "psnr": [peak_signal_noise_ratio(t[0], e[0], data_range=t.max()) for t, e in zip(targets, estimates)],
        "ssim": [structural_similarity(t[0], e[0], data_range=t.max()) for t, e in zip(targets, estimates)],
        "nmse": [normalized_root_mse(t[0], e[0], normalization="euclidean") ** 2 for t, e in zip(targets, estimates)],
    }
    for name, values in expected.items():
        fn = getattr(metrics, name)
        per_sample = fn(_t(estimates), _t(targets), reduction="none")
        assert per_sample.shape == (2,)
        np.testing.assert_allclose(per_sample.numpy(), values, rtol=TOL, atol=TOL)
        assert fn(_t(estimates), _t(targets)) == pytest.approx(float(np.mean(values)), abs=TOL)


def test_per_sample_output_keeps_input_dtype_and_gradient(camera):
    target, noisy, _ = camera
    est = _t(noisy).float()[None, None].requires_grad_(True)
    value = metrics.ssim(est, _t(target).float()[None, None], reduction="none")
    assert value.dtype == torch.float32
    value.sum().backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0


def test_volume_metrics_match_a_slice_loop(camera):
    target, noisy, blurred = camera
    # Four slices of different brightness: every slice must use the volume max, not its own.
    scales = [1.0, 0.5, 0.8, 0.3]
    tgt = np.stack([s * np.roll(target, 7 * i, axis=1) for i, s in enumerate(scales)])
    est = np.stack([s * np.roll(noisy if i % 2 else blurred, 7 * i, axis=1) for i, s in enumerate(scales)])
    vmax = tgt.max()
    ssim_loop = np.mean([structural_similarity(tgt[i], est[i], data_range=vmax) for i in range(len(scales))])
    assert metrics.ssim_volume(_t(est), _t(tgt)) == pytest.approx(ssim_loop, abs=TOL)
    assert metrics.psnr_volume(_t(est), _t(tgt)) == pytest.approx(peak_signal_noise_ratio(tgt, est, data_range=vmax), abs=TOL)
    assert metrics.nmse_volume(_t(est), _t(tgt)) == pytest.approx(
        np.linalg.norm(tgt - est) ** 2 / np.linalg.norm(tgt) ** 2, rel=TOL)
    # The batched 5-D layout (B, C, D, H, W) treats each sample as such a volume.
    assert metrics.ssim(_t(est)[None, None], _t(tgt)[None, None]) == pytest.approx(ssim_loop, abs=TOL)


def test_errors(camera):
    target = _t(camera[0])
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(target[:-1], target)
    with pytest.raises(ValueError, match="same shape"):
        metrics.ssim_volume(target[None, :-1], target[None])
    with pytest.raises(ValueError, match="volume"):
        metrics.ssim(target[None], target[None])  # (slices, H, W) belongs to the volume functions
    with pytest.raises(ValueError, match="complex"):
        metrics.nmse(target.to(torch.complex128), target.to(torch.complex128))
    with pytest.raises(ValueError, match=">= 7"):
        metrics.ssim(target[:5, :5], target[:5, :5])
    with pytest.raises(ValueError, match="reduction"):
        metrics.psnr(target, target, reduction="sum")
    with pytest.raises(ValueError, match="data_range"):
        metrics.psnr(target, torch.zeros_like(target))


# ------------------------------------------------------------------- complex and non-finite inputs
def _complex_pair():
    """Real and imaginary channels (B, 2, H, W) of a target and a noisy estimate."""
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 2, 16, 16, generator=g, dtype=torch.float64)
    return target + 0.1 * torch.randn(target.shape, generator=g, dtype=torch.float64), target


@pytest.mark.parametrize("name", ["psnr", "ssim", "nmse"])
def test_two_channel_complex_images_are_refused_with_what_to_do(name):
    estimate, target = _complex_pair()
    fn = getattr(metrics, name)
    with pytest.raises(ValueError, match=r"complex_abs") as info:
        fn(estimate, target)
    assert "complex_input" in str(info.value)
    with pytest.raises(ValueError, match=r"complex_abs"):  # a (B, 2, D, H, W) complex volume too
        fn(estimate[:, :, None].expand(-1, -1, 2, -1, -1), target[:, :, None].expand(-1, -1, 2, -1, -1))
    # complex_input=True scores the magnitudes, as complex_abs does.
    from learn2invert.operators.fft import complex_abs

    assert fn(estimate, target, complex_input=True) == pytest.approx(fn(complex_abs(estimate), complex_abs(target)), abs=1e-12)
    # complex_input=False: the two channels are two real images, scored like RGB channels.
    peak = target.amax(dim=(1, 2, 3))  # one data range per sample, shared by its channels
    per_channel = [fn(estimate[:, c:c + 1], target[:, c:c + 1], **({} if name == "nmse" else {"data_range": peak}))
                   for c in range(2)]
    if name == "ssim":  # SSIM is a per-channel mean
        assert fn(estimate, target, complex_input=False) == pytest.approx(np.mean(per_channel), abs=1e-12)
    else:
        assert math.isfinite(fn(estimate, target, complex_input=False))
    with pytest.raises(ValueError, match="2 channels"):
        fn(estimate[:, :1], target[:, :1], complex_input=True)


@pytest.mark.parametrize("name", ["psnr", "ssim", "nmse"])
def test_nan_and_inf_are_counted_and_the_argument_named(name, camera):
    target = _t(camera[0])[None, None]
    estimate = target.clone()
    estimate[0, 0, 0, :3] = float("nan")
    estimate[0, 0, 1, :2] = float("inf")
    estimate[0, 0, 2, 0] = -float("inf")
    fn = getattr(metrics, name)
    with pytest.raises(ValueError, match=r"estimate contains 3 NaN and 3 infinite"):
        fn(estimate, target)
    with pytest.raises(ValueError, match=r"target contains 3 NaN and 3 infinite"):
        fn(target, estimate)
    with pytest.raises(ValueError, match=r"target contains 3 NaN"):  # also with reduction="none"
        fn(target, estimate, reduction="none")
    # Per-sample values (what evaluation loops collect): a diverged sample scores NaN, with a warning,
    # and the other samples keep their scores.
    both = torch.cat([estimate, _t(camera[1])[None, None]])
    with pytest.warns(RuntimeWarning, match=r"estimate contains 3 NaN and 3 infinite.*sample"):
        values = fn(both, torch.cat([target, target]), reduction="none")
    assert math.isnan(float(values[0])) and math.isfinite(float(values[1]))
    with pytest.raises(ValueError, match=r"estimate contains 3 NaN"):
        getattr(metrics, f"{name}_volume")(estimate[0], target[0])
