"""2D parallel-beam computed tomography: the discrete Radon transform and its exact adjoint.

Geometry (all lengths in pixel units, the pixel spacing is 1):

* image ``x`` of shape ``(B, C, N, N)``; pixel ``(row, col)`` has its centre at
  ``X = col - (N - 1) / 2`` (to the right) and ``Y = row - (N - 1) / 2`` (downwards), so the
  rotation centre is the geometric centre of the image;
* ``n_angles`` projection angles ``theta_a = a * pi / n_angles`` (radians, uniformly in ``[0, pi)``);
* ``n_detectors`` bins of width 1, bin ``k`` centred at ``t_k = k - (n_detectors - 1) / 2``;
* the ray of bin ``k`` at angle ``theta`` is the line ``X cos(theta) - Y sin(theta) = t_k``; the
  sinogram ``y[..., a, k]`` is the line integral of the image along it, in pixel units (a disk of
  radius ``r`` pixels and value 1 gives ``2 sqrt(r^2 - t^2)``).

This is the orientation of :func:`skimage.transform.radon` (``theta = 0`` sums down the columns);
skimage rotates about pixel ``N // 2`` instead of the geometric centre, so for odd ``N`` and
``n_detectors = N`` our sinogram is directly comparable with ``radon(image, circle=True).T``.

Discretisation: Joseph's ray-driven method. Each ray is sampled where it crosses the centre line of
every image row (or column, whichever axis the ray is closer to), the image is linearly interpolated
between the two nearest pixels there, and each sample is weighted by the step length along the ray
(``1 / max(|cos|, |sin|)``). It was chosen over pixel-driven linear interpolation onto detector bins
because it is both faster and more accurate at equal detector sampling (measured at 128 x 128,
180 angles, 182 bins, anti-aliased disks against analytic chords):

* fewer non-zeros, hence faster sparse products: about ``2 N^2 * 2 sqrt(2) / pi`` per angle (5.28 M)
  against ``2 N^2`` (5.87 M) for pixel-driven;
* smaller projection error: relative L2 error 3.4e-3 / 8.2e-3 (disk radius 50 / 20) against
  8.1e-3 / 1.2e-2, and a maximum error of 1.8 pixels against 11 near the disk edge, where the
  pixel-driven footprint (a triangle of width 2 instead of the true trapezoid of width up to
  sqrt(2)) is at its worst around 45 degrees.

The price is the usual one of ray-driven projectors: at a single oblique angle the back-projection
(``A^T``) weights pixels unevenly (rays are sqrt(2) apart along a row at 45 degrees), but summed over
the angles the back-projection of a constant sinogram is flat to 0.6% (relative standard deviation
in the central half of a 128 x 128 image, 180 angles), and FBP beats skimage's ``iradon``
(see :meth:`ParallelBeamCT.fbp`).

The system matrix is built once, vectorised over rays and image rows, and stored as two CSR
matrices (``A`` and its transpose, which is the exact adjoint) because torch's product with a
transposed CSR matrix is 50-80x slower (measured on CPU) than with a CSR matrix of the
transpose. Memory:
``2 * nnz * (bytes per value + 4)``, about 85 MB in float32 for 128 x 128 with 180 angles.

Default ``n_detectors`` covers the image diagonal: the smallest integer ``>= sqrt(2) * N`` with the
parity of ``N``, so that at 0 and 90 degrees bin centres fall exactly on pixel centres and the
projection is a plain sum of columns (or rows), without interpolation blur.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.sparse
import torch

from .base import LinearOperator, check_tensor, compute_dtype

FBP_FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


def default_n_detectors(image_size: int) -> int:
    """Smallest bin count ``>= sqrt(2) * image_size`` with the parity of ``image_size``."""
    n = math.ceil(math.sqrt(2.0) * image_size)
    return n + ((n - image_size) % 2)


def joseph_system_matrix(image_size: int, angles: np.ndarray, n_detectors: int) -> scipy.sparse.csr_matrix:
    """The Joseph projector as a float64 CSR matrix of shape ``(n_angles * n_detectors, N * N)``.

    Row ``a * n_detectors + k`` is the ray of bin ``k`` at ``angles[a]`` (radians); column
    ``row * N + col`` is the pixel in row-major order. Entries are lengths in pixel units.
    """
    n = image_size
    centre = (n - 1) / 2.0
    t = np.arange(n_detectors, dtype=np.float64) - (n_detectors - 1) / 2.0
    steps = np.arange(n)
    step_pos = steps - centre
    # Entries are emitted ray by ray, angle by angle, so they arrive sorted by matrix row and
    # the CSR row pointer is a cumulative count: no sort of the ~nnz entries is needed.
    cols_per_angle, vals_per_angle, counts_per_angle = [], [], []
    ray_ids = np.arange(n_detectors)
    for theta in angles:
        cos, sin = math.cos(theta), math.sin(theta)
        if abs(cos) >= abs(sin):
            # Step over image rows: on row Y the ray is at X = (t + Y sin) / cos.
            cross = (t[:, None] + step_pos[None, :] * sin) / cos
            step_len = 1.0 / abs(cos)
        else:
            # Step over image columns: on column X the ray is at Y = (X cos - t) / sin.
            cross = (step_pos[None, :] * cos - t[:, None]) / sin
            step_len = 1.0 / abs(sin)
        cross = cross + centre  # fractional pixel index along the interpolation axis, (D, N)
        lower = np.floor(cross)
        frac = cross - lower
        lower = lower.astype(np.int64)
        idx = np.stack([lower, lower + 1], axis=-1)  # (D, N, 2)
        val = np.stack([1.0 - frac, frac], axis=-1) * step_len
        if abs(cos) >= abs(sin):
            pix = steps[None, :, None] * n + idx
        else:
            pix = idx * n + steps[None, :, None]
        # Pixels outside the image are zero; zero weights (ray exactly on a pixel centre) are
        # dropped so they cost nothing in the products.
        keep = (idx >= 0) & (idx < n) & (val > 0.0)
        cols_per_angle.append(pix[keep])
        vals_per_angle.append(val[keep])
        counts_per_angle.append(np.bincount(np.broadcast_to(ray_ids[:, None, None], keep.shape)[keep],
                                            minlength=n_detectors))
    counts = np.concatenate(counts_per_angle)
    indptr = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    matrix = scipy.sparse.csr_matrix(
        (np.concatenate(vals_per_angle), np.concatenate(cols_per_angle), indptr),
        shape=(len(angles) * n_detectors, n * n),
    )
    # Column-stepping rays emit pixels column by column; sorted indices are a CSR invariant
    # and keep the products cache-friendly.
    matrix.sort_indices()
    return matrix


def _to_torch_csr(matrix: scipy.sparse.csr_matrix, dtype: torch.dtype) -> torch.Tensor:
    # int32 indices make the CPU product about 1.5x faster; fall back to int64 past 2^31 entries.
    index_dtype = np.int32 if matrix.nnz < np.iinfo(np.int32).max else np.int64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(index_dtype)),
            torch.from_numpy(matrix.indices.astype(index_dtype)),
            torch.from_numpy(matrix.data).to(dtype),
            size=matrix.shape,
            # Built sorted and in range by construction (and checked in the tests); the O(nnz)
            # validation would only slow down construction.
            check_invariants=False,
        )


class _SparseProduct(torch.autograd.Function):
    """``matrix @ dense`` whose backward is ``matrix_t @ grad``, so gradients use the stored
    transpose (fast) instead of torch's transpose of a CSR matrix (slow), and stay twice
    differentiable."""

    @staticmethod
    def forward(ctx, dense: torch.Tensor, matrix: torch.Tensor, matrix_t: torch.Tensor) -> torch.Tensor:
        ctx.matrices = (matrix, matrix_t)
        return matrix @ dense

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        matrix, matrix_t = ctx.matrices
        return _SparseProduct.apply(grad, matrix_t, matrix), None, None


class ParallelBeamCT(LinearOperator):
    """2D parallel-beam Radon transform ``y = A x`` with the exact adjoint ``A^T``.

    Args:
        image_size: ``N``; images are ``(B, C, N, N)``, pixel spacing 1.
        n_angles: number of projection angles, uniformly spaced in ``[0, pi)``.
        n_detectors: number of detector bins of width 1 pixel, centred on the rotation centre.
            Default: enough to cover the image diagonal (see :func:`default_n_detectors`).

    Shapes: ``A`` maps ``(B, C, N, N)`` to sinograms ``(B, C, n_angles, n_detectors)`` of line
    integrals in pixel units; ``A_adjoint`` maps back. Both work in float32 and float64 on CPU and
    CUDA; float16 / bfloat16 inputs are computed in float32 and give float32 results. The system
    matrices are non-persistent buffers (rebuilt from the three arguments, never saved in a
    ``state_dict``) and follow ``.to(device)`` / ``.double()``. Inputs of another floating dtype
    than the module are accepted too: the matrices are cast to it once and cached.
    Weights are computed in float64 and stored in the default dtype, so ``.double()`` after
    building in float32 keeps float32-rounded weights (relative change < 1e-7; the adjoint stays
    exact because both matrices hold the same rounded values); build under
    ``torch.set_default_dtype(torch.float64)`` for full float64 weights.
    See the module docstring for the geometry and the discretisation.
    """

    def __init__(self, image_size: int, n_angles: int, n_detectors: int | None = None):
        super().__init__()
        for name, value in (("image_size", image_size), ("n_angles", n_angles)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if n_detectors is None:
            n_detectors = default_n_detectors(int(image_size))
        elif isinstance(n_detectors, bool) or not isinstance(n_detectors, (int, np.integer)) or n_detectors < 1:
            raise ValueError(f"n_detectors must be a positive integer or None, got {n_detectors!r}")
        self.image_size = int(image_size)
        self.n_angles = int(n_angles)
        self.n_detectors = int(n_detectors)

        angles = np.arange(self.n_angles, dtype=np.float64) * (np.pi / self.n_angles)
        matrix = joseph_system_matrix(self.image_size, angles, self.n_detectors)
        dtype = torch.get_default_dtype()
        self.register_buffer("angles", torch.from_numpy(angles).to(dtype), persistent=False)
        self.register_buffer("matrix", _to_torch_csr(matrix, dtype), persistent=False)
        self.register_buffer("matrix_t", _to_torch_csr(matrix.tocsc().T.tocsr(), dtype), persistent=False)
        self.nnz = int(matrix.nnz)
        self._cast_cache: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}

    def extra_repr(self) -> str:
        return (f"image_size={self.image_size}, n_angles={self.n_angles}, "
                f"n_detectors={self.n_detectors}, nnz={self.nnz}")

    def _apply(self, fn, *args, **kwargs):
        # Casts cached for another dtype would go stale (wrong device) once the buffers move.
        self._cast_cache = {}
        return super()._apply(fn, *args, **kwargs)

    def _matrices(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if like.device != self.matrix.device:
            raise ValueError(
                f"input is on {like.device} but the CT system matrix is on {self.matrix.device}; "
                "move the operator with .to(device)"
            )
        if like.dtype == self.matrix.dtype:
            return self.matrix, self.matrix_t
        if like.dtype not in self._cast_cache:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
                self._cast_cache[like.dtype] = (self.matrix.to(like.dtype), self.matrix_t.to(like.dtype))
        return self._cast_cache[like.dtype]

    def _check_image(self, x: torch.Tensor) -> None:
        n = self.image_size
        check_tensor(x, "image x", f"(B, C, {n}, {n})", ndims=(4,), spatial=(n, n), owner=type(self).__name__)

    def _check_sinogram(self, y: torch.Tensor, name: str = "sinogram y") -> None:
        check_tensor(y, name, f"(B, C, {self.n_angles}, {self.n_detectors}) = (B, C, n_angles, n_detectors)",
                     ndims=(4,), spatial=(self.n_angles, self.n_detectors), owner=type(self).__name__)

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Project images ``(B, C, N, N)`` to sinograms ``(B, C, n_angles, n_detectors)``."""
        self._check_image(x)
        b, c = x.shape[:2]
        if b == 0:
            return x.new_zeros((0, c, self.n_angles, self.n_detectors), dtype=compute_dtype(x.dtype))
        # Sparse CSR products have no float16 / bfloat16 kernels on CPU: those inputs are
        # projected in float32 and the result stays float32 (as the FFTs of operators.fft do).
        work = x.to(compute_dtype(x.dtype))
        matrix, matrix_t = self._matrices(work)
        flat = work.reshape(b * c, -1).t()
        y = _SparseProduct.apply(flat, matrix, matrix_t)
        return y.t().reshape(b, c, self.n_angles, self.n_detectors)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Back-project sinograms ``(B, C, n_angles, n_detectors)`` to images ``(B, C, N, N)``
        with the exact transpose of :meth:`A` (no filtering, no scaling)."""
        self._check_sinogram(y)
        b, c = y.shape[:2]
        if b == 0:
            return y.new_zeros((0, c, self.image_size, self.image_size), dtype=compute_dtype(y.dtype))
        work = y.to(compute_dtype(y.dtype))
        matrix, matrix_t = self._matrices(work)
        flat = work.reshape(b * c, -1).t()
        x = _SparseProduct.apply(flat, matrix_t, matrix)
        return x.t().reshape(b, c, self.image_size, self.image_size)

    def fbp_filter(self, filter: str = "ramp", *, dtype: torch.dtype | None = None,
                   device: torch.device | None = None) -> torch.Tensor:
        """Frequency response of the FBP filter for a real FFT of length ``P``, shape ``(P // 2 + 1,)``.

        ``P`` is the smallest power of two ``>= max(64, 2 * n_detectors)``, so the zero-padded
        circular convolution equals the linear one on every bin. The ramp is the transform of the
        band-limited spatial ramp kernel (Kak & Slaney, eq. 3.61: ``h[0] = 1/4``,
        ``h[n] = -1 / (pi n)^2`` for odd ``n``, 0 for even ``n``), which, unlike sampling ``|f|``,
        has the right (non-zero) DC value and no constant offset in the reconstruction. The other
        names multiply it by a window of the frequency ``f`` in cycles per bin, ``|f| <= 1/2``:
        shepp-logan ``sinc(f)``, cosine ``cos(pi f)``, hamming ``0.54 + 0.46 cos(2 pi f)``,
        hann ``(1 + cos(2 pi f)) / 2``.
        """
        if filter not in FBP_FILTERS:
            raise ValueError(f"unknown FBP filter {filter!r}; choose one of {FBP_FILTERS}")
        dtype = dtype if dtype is not None else self.angles.dtype
        device = device if device is not None else self.angles.device
        size = max(64, 1 << (2 * self.n_detectors - 1).bit_length())
        offsets = torch.arange(size, dtype=torch.float64, device=device)
        offsets = torch.where(offsets < size // 2, offsets, offsets - size)  # circular kernel index
        odd = offsets.remainder(2) == 1
        kernel = torch.where(odd, -1.0 / (math.pi * offsets) ** 2, torch.zeros_like(offsets))
        kernel[0] = 0.25
        response = torch.fft.rfft(kernel).real  # real because the kernel is even
        freq = torch.fft.rfftfreq(size, device=device, dtype=torch.float64)
        if filter == "shepp-logan":
            response = response * torch.sinc(freq)
        elif filter == "cosine":
            response = response * torch.cos(math.pi * freq)
        elif filter == "hamming":
            response = response * (0.54 + 0.46 * torch.cos(2 * math.pi * freq))
        elif filter == "hann":
            response = response * (0.5 + 0.5 * torch.cos(2 * math.pi * freq))
        return response.to(dtype)

    def fbp(self, y: torch.Tensor, filter: str = "ramp") -> torch.Tensor:
        """Filtered back-projection, the classical baseline reconstruction ``(B, C, N, N)``.

        Each projection is filtered along the detector axis (zero-padded FFT, see
        :meth:`fbp_filter`), then back-projected with the exact adjoint and scaled by
        ``pi / n_angles`` (the angular step) times the detector spacing (1 pixel), so that
        ``fbp(A x) ~ x`` in intensity. Shepp-Logan phantom, noiseless, ramp filter: PSNR 29.2 dB at
        64 x 64 with 90 angles, 30.8 dB at 128 x 128 with 180 angles (skimage ``iradon`` of its own
        ``radon``: 28.1 / 29.9 dB).
        """
        self._check_sinogram(y)
        if y.shape[0] == 0:
            return y.new_zeros((0, y.shape[1], self.image_size, self.image_size), dtype=compute_dtype(y.dtype))
        work = y.to(compute_dtype(y.dtype))
        response = self.fbp_filter(filter, dtype=work.dtype, device=y.device)
        size = 2 * (response.shape[0] - 1)
        filtered = torch.fft.irfft(torch.fft.rfft(work, n=size, dim=-1) * response, n=size, dim=-1)
        filtered = filtered[..., : self.n_detectors]
        return self.A_adjoint(filtered) * (math.pi / self.n_angles)
