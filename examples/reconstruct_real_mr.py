"""A real MR slice (pydicom's MR_small.dcm), 4x undersampled: zero-filled, TV and a shipped model."""
import torch

from learn2invert import data, metrics, operators, pretrained, solvers

torch.manual_seed(0)
x = data.DicomImages("pydicom:MR_small.dcm")[0][None]            # (1, 2, 64, 64) complex, magnitude in [0, 1]
mask = operators.masks.random_mask((64,), acceleration=4, center_fraction=0.08, seed=0)
mri = operators.SingleCoilMRI(mask)
sigma = 0.005                                                      # the shipped models' k-space noise
y = operators.add_gaussian_noise(mri.A(x), sigma=sigma)

model = pretrained.load("mri_admm_mixed")                          # ADMM-Net trained with photographs in the mix
with torch.no_grad():
    estimates = {
        "zero-filled": solvers.Adjoint()(y, mri)[-1],
        "tv": solvers.TVSolver(5e-4, iterations=100)(y, mri)[-1],  # the demo's weight at 4x (validation slices)
        "mri_admm_mixed": model(y, mri, sigma=sigma)[-1],
    }
magnitude = operators.complex_abs
for name, estimate in estimates.items():
    print(f"{name:>15}: PSNR {metrics.psnr(magnitude(estimate), magnitude(x)):.2f} dB, "
          f"SSIM {metrics.ssim(magnitude(estimate), magnitude(x)):.4f}")
