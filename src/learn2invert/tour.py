"""The operator tour (`l2i tour`): every forward operator on embedded data, reconstructed by classical baselines.

For each task it simulates noisy measurements of a held-out embedded image, reconstructs them
with the adjoint (zero-filled MRI, filtered back-projection for CT; a nonlinear operator's
``A_dagger(y)``) and with Tikhonov regularisation (smoothness prior, weight chosen on a
*different* validation image: least squares by CG for linear operators, the operator's negative
log-likelihood by accelerated gradient descent for nonlinear ones), and writes ``report.md``,
``metrics.json`` and ``reconstructions.png`` into the output folder.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from . import metrics, operators
from .data import BrainSlices, load_image, shepp_logan
from .data.phantoms import random_ellipses
from .operators.fft import complex_abs
from .outputs import check_output_folder
from .operators.likelihood import back_projection, is_linear, likelihood_of, operator_norm_squared
from .solvers.classical import nonlinear_tikhonov, normal_operator_norm, tikhonov

# Regularisation weights, relative to ||A^T A|| (a nonlinear operator's bound on ||J^T J||), tried
# on the validation image; the best one is used on the test image.
LAMBDA_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


@dataclass
class Task:
    """One inverse problem of the demo.

    ``make_operator(truth)`` builds the operator (image-size dependent), ``sigma`` is the noise
    standard deviation in measurement units (Poisson operators: the count gain, see
    :func:`~learn2invert.operators.add_poisson_noise`), ``adjoint_name`` labels the first baseline.
    """

    name: str
    test_image: torch.Tensor  # (1, C, H, W)
    validation_image: torch.Tensor  # (1, C, H, W)
    make_operator: Callable[[torch.Tensor], operators.LinearOperator]
    sigma: float
    adjoint_name: str = "adjoint"
    first_baseline: Callable[[operators.LinearOperator, torch.Tensor], torch.Tensor] | None = None


def _magnitude(x: torch.Tensor) -> torch.Tensor:
    """Image to show and score: |x| for 2-channel complex images, x itself otherwise."""
    return complex_abs(x) if x.shape[1] == 2 else x


def _score(estimate: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    est, ref = _magnitude(estimate), _magnitude(truth)
    return {"psnr": metrics.psnr(est, ref), "ssim": metrics.ssim(est, ref), "nmse": metrics.nmse(est, ref)}


def _measure(op: operators.LinearOperator, truth: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if likelihood_of(op) == "poisson":
        return operators.add_poisson_noise(op.A(truth), sigma, generator=g)
    return operators.add_gaussian_noise(op.A(truth), sigma, generator=g)


def _tikhonov(op, y: torch.Tensor, lam: float) -> torch.Tensor:
    """Smoothness-regularised reconstruction: CG least squares, or the nonlinear fit from ``A_dagger(y)``."""
    return tikhonov(op, y, lam) if is_linear(op) else nonlinear_tikhonov(op, y, lam, iterations=100)


def _scale(op, like: torch.Tensor) -> float:
    """``||A^T A||`` by power iteration; a nonlinear operator's own bound ``norm_squared()`` on ``||J^T J||``
    (:func:`~learn2invert.operators.likelihood.operator_norm_squared`, which names an operator without one)."""
    return normal_operator_norm(op, like) if is_linear(op) else operator_norm_squared(op, like)


def _build_tasks(size: int, seed: int) -> list[Task]:
    def crop(name: str, grey: bool = True) -> torch.Tensor:
        img = load_image(name, grey=grey)
        c, h, w = img.shape
        if size > min(h, w):
            raise ValueError(f"--size {size} is larger than the embedded photograph '{name}' ({h}x{w}); "
                             f"use --size {min(h, w)} or less")
        top, left = (h - size) // 2, (w - size) // 2
        return img[None, :, top : top + size, left : left + size].contiguous()

    brain_test = BrainSlices(split="test", size=size, scale=0.7 * size / 128, seed=seed)
    brain_val = BrainSlices(split="val", size=size, scale=0.7 * size / 128, seed=seed)
    rng = np.random.default_rng(seed)
    inpaint_mask = torch.from_numpy(rng.random((size, size)) < 0.5)
    mri_mask = operators.masks.random_mask((size,), acceleration=4, center_fraction=0.08, seed=seed)
    small = 32  # random projections act on flattened images: keep the matrix small
    rp_test = torch.nn.functional.interpolate(crop("camera"), size=(small, small), mode="area")
    rp_val = torch.nn.functional.interpolate(crop("coins"), size=(small, small), mode="area")
    ct_angles = 60
    ct = operators.ParallelBeamCT(size, ct_angles)
    # About 4 attenuation lengths across the image: enough photons behind the densest ray.
    beer_lambert = operators.BeerLambertCT(size, ct_angles, attenuation=4.0 / size)
    return [
        Task("denoising (sigma=0.1)", crop("camera"), crop("coins"), lambda x: operators.Denoising(), 0.1),
        Task("deblurring (Gaussian 9x9, s=2)", crop("astronaut", grey=False), crop("coffee", grey=False),
             lambda x: operators.GaussianBlur(9, 2.0), 0.01),
        Task("inpainting (50% pixels)", crop("camera"), crop("coins"), lambda x: operators.Inpainting(inpaint_mask), 0.01),
        Task("super-resolution x2 (bicubic)", crop("camera"), crop("coins"), lambda x: operators.SuperResolution(2), 0.01),
        Task("compressed sensing (Gaussian, m=n/4)", rp_test, rp_val,
             lambda x: operators.RandomProjection(small * small // 4, small * small, kind="gaussian", seed=seed,
                                                  image_shape=(1, small, small)), 0.5,
             "A^T y / m", lambda op, y: op.A_adjoint(y) / op.m),
        Task("single-coil MRI (4x random, 8% centre)", brain_test[len(brain_test) // 2][None],
             brain_val[len(brain_val) // 2][None], lambda x: operators.SingleCoilMRI(mri_mask), 0.002, "zero-filled"),
        Task(f"sparse-view CT ({ct_angles} angles)", shepp_logan(size)[None], random_ellipses(size, rng=seed + 1)[None],
             lambda x: ct, 0.5, "FBP", lambda op, y: op.fbp(y)),
        # Nonlinear: no adjoint; the first baseline is the operator's A_dagger(y).
        Task("phase retrieval (Fourier magnitude, 2x oversampled)", crop("camera"), crop("coins"),
             lambda x: operators.PhaseRetrieval(2), 0.01, "zero-phase A_dagger(y)"),
        Task(f"Beer-Lambert CT ({ct_angles} angles, Poisson)", shepp_logan(size)[None],
             random_ellipses(size, rng=seed + 1)[None], lambda x: beer_lambert, 0.01, "log + FBP"),
    ]


def _choose_lambda(task: Task, seed: int) -> float:
    """Pick the Tikhonov weight with the best PSNR on the validation image (never the test image)."""
    op = task.make_operator(task.validation_image)
    y = _measure(op, task.validation_image, task.sigma, seed + 1)
    grid = [rel * _scale(op, task.validation_image) for rel in LAMBDA_GRID]
    scores = [_score(_tikhonov(op, y, lam), task.validation_image)["psnr"] for lam in grid]
    return grid[int(np.argmax(scores))]


def _show(ax, image: torch.Tensor, title: str) -> None:
    img = _magnitude(image)[0].detach().cpu()
    if img.shape[0] == 3:
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
    else:
        ax.imshow(img[0].numpy(), cmap="gray")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def run_tour(out: str | Path, size: int = 128, seed: int = 0, show_progress: bool = True) -> dict:
    """Run every task and write the report; returns ``{task: {method: {psnr, ssim, nmse}}}``.

    ``show_progress``: a bar over the tasks (on stderr) naming the task being solved.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(size, int) or size < 16:
        raise ValueError(f"--size is the image size in pixels and must be an integer >= 16, got {size!r}")
    out = check_output_folder(out)  # a file named like the folder, or a read-only one: one line, before any work
    torch.manual_seed(seed)
    start = time.perf_counter()
    tasks = _build_tasks(size, seed)
    results: dict[str, dict] = {}
    rows = []
    bar = tqdm(tasks, desc="tour", unit="task", disable=not show_progress)
    for task in bar:
        bar.set_postfix_str(task.name)  # the Tikhonov weight search of one task takes seconds
        op = task.make_operator(task.test_image)
        y = _measure(op, task.test_image, task.sigma, seed)
        first = task.first_baseline(op, y) if task.first_baseline else back_projection(op, y)
        lam = _choose_lambda(task, seed)
        tik = _tikhonov(op, y, lam)
        results[task.name] = {task.adjoint_name: _score(first, task.test_image), "tikhonov": _score(tik, task.test_image)}
        results[task.name]["tikhonov"]["lambda"] = lam
        rows.append((task, first, tik, lam))

    fig, axes = plt.subplots(len(rows), 4, figsize=(8, 2.1 * len(rows)))
    for r, (task, first, tik, lam) in enumerate(rows):
        m = results[task.name]
        _show(axes[r, 0], task.test_image, f"truth\n{task.name}")
        _show(axes[r, 1], first, f"{task.adjoint_name}\n{m[task.adjoint_name]['psnr']:.2f} dB")
        _show(axes[r, 2], tik, f"Tikhonov (lam={lam:.2g})\n{m['tikhonov']['psnr']:.2f} dB")
        err = (_magnitude(tik) - _magnitude(task.test_image)).abs().mean(dim=1, keepdim=True)
        axes[r, 3].imshow(err[0, 0].numpy(), cmap="magma", vmin=0, vmax=0.25)
        axes[r, 3].set_title("|Tikhonov - truth|", fontsize=8)
        axes[r, 3].axis("off")
    fig.tight_layout()
    fig.savefig(out / "reconstructions.png", dpi=110)
    plt.close(fig)

    elapsed = time.perf_counter() - start
    (out / "metrics.json").write_text(json.dumps(results, indent=2))
    lines = [
        "# learn2invert demo: forward operators and classical baselines",
        "",
        f"Embedded data, image size {size}, seed {seed}; wall time {elapsed:.1f} s. "
        "Tikhonov weight chosen on a separate validation image. PSNR/SSIM on magnitude images, data range = truth max.",
        "",
        "| task | method | PSNR (dB) | SSIM | NMSE |",
        "|---|---|---:|---:|---:|",
    ]
    for name, methods in results.items():
        for method, m in methods.items():
            lines.append(f"| {name} | {method} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['nmse']:.4f} |")
    lines += ["", "![reconstructions](reconstructions.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines[4:-3]))
    print(f"\nreport: {out / 'report.md'}  figure: {out / 'reconstructions.png'}  ({elapsed:.1f} s)")
    return results
