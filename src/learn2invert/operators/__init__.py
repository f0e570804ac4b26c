"""Forward operators: the physics ``y = A x`` of each inverse problem, with exact adjoints.

Every linear operator is an ``nn.Module`` with ``A(x)``, ``A_adjoint(y)`` and ``A_adjoint_A(x)``;
nonlinear ones (phase retrieval, Beer-Lambert CT) have ``A(x)`` and a vector-Jacobian product or
autograd, and every solver takes its data term from :func:`data_gradient`.
"""
from . import masks
from .base import (LinearOperator, NonlinearOperator, adjoint_mismatch, check_finite, check_measurements,
                   check_parameter_dtype, check_tensor)
from .likelihood import (LIKELIHOODS, NoGradientError, back_projection, data_gradient, is_linear, likelihood_gradient,
                         likelihood_of, normal, operator_norm_squared)
from .noise import add_gaussian_noise, add_poisson_noise, quantize
from .gradient import FiniteDifference
from .fft import complex_abs, fft2c, fft3c, fftnc, from_complex, ifft2c, ifft3c, ifftnc, to_complex
from .mri import SingleCoilMRI
from .multicoil import (MultiCoilMRI, calibration_region, estimate_sensitivities, rss, sense_combine, sense_expand,
                        simulated_coil_maps)
from .denoising import Denoising
from .blur import GaussianBlur, gaussian_kernel
from .inpainting import Inpainting, centered_hole_mask
from .superres import SuperResolution, bicubic_matlab, downscale_taps, upscale_matrix
from .random_projection import RandomProjection
from .ct import ParallelBeamCT
from .nonlinear import BeerLambertCT, PhaseRetrieval

__all__ = [
    # the contract and its checks
    "LinearOperator", "NonlinearOperator", "adjoint_mismatch",
    # operators
    "Denoising", "GaussianBlur", "Inpainting", "SuperResolution", "RandomProjection", "SingleCoilMRI", "MultiCoilMRI",
    "ParallelBeamCT", "FiniteDifference", "PhaseRetrieval", "BeerLambertCT",
    # their helpers
    "masks", "gaussian_kernel", "centered_hole_mask", "bicubic_matlab", "simulated_coil_maps", "estimate_sensitivities",
    "rss", "sense_combine", "sense_expand", "calibration_region",
    # noise
    "add_gaussian_noise", "add_poisson_noise", "quantize",
    # the data term every solver uses
    "data_gradient", "likelihood_gradient", "likelihood_of", "LIKELIHOODS", "NoGradientError", "back_projection",
    "is_linear", "normal", "operator_norm_squared",
    # complex images and centred FFTs
    "complex_abs", "to_complex", "from_complex", "fft2c", "ifft2c", "fft3c", "ifft3c", "fftnc", "ifftnc",
]
