"""Random projections of flattened images: Gaussian, Bernoulli (+/-1) and Fourier ensembles.

These are the three compressed-sensing matrices of the RIM paper's multi-task experiment
(Sec. 4.4): 32 x 32 grey patches measured with ``m = n / p`` random projections, where ``p`` is
the "reduction in dimensionality" of its Fig. 2 (see :meth:`RandomProjection.from_reduction`).

Scaling. The paper draws Gaussian entries from a standard normal and +/-1 Bernoulli entries
(Sec. 4.4), uses noise ``sigma = 1`` (Fig. 2 caption) and images in ``[0, 1]`` (footnote 4).
Such a matrix has ``E[A^T A] = m I``: ``A^T y`` is about ``m`` times the image and
``||A x|| ~ sqrt(m) ||x||``. ``normalize=True`` divides the entries by ``sqrt(m)`` (the
compressed-sensing convention: columns of unit norm, ``E[A^T A] = I``, ``A^T y`` on the image's
scale). Scaling ``A`` by ``c`` changes the measurement SNR unless the noise is scaled too: the
paper's problem (``sigma = 1`` with unit-variance entries) is ``sigma = 1 / sqrt(m)`` with
``normalize=True``, and then ``y``, ``A`` and ``sigma`` are all rescaled by ``1 / sqrt(m)``, so
the posterior, the maximum-likelihood solution and ``A^T (y - A x) / sigma^2`` are exactly the
paper's. What changes is only the units of ``y``.
"""
from __future__ import annotations

import math

import torch

from .base import LinearOperator, check_tensor, compute_dtype

_KINDS = ("gaussian", "bernoulli", "fourier")
_FALLBACK_LIMIT = 8 * 2**30  # bytes, where the machine's memory cannot be read


class MatrixTooLarge(ValueError):
    """Building a random projection would take more memory than :func:`memory_limit_bytes`."""


def memory_limit_bytes() -> int:
    """The most memory a random projection may take to build: half of this machine's physical
    memory (``os.sysconf``, else ``psutil`` if installed), or 8 GiB where neither can tell."""
    import os

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        total = 0
    if total <= 0:
        try:
            import psutil

            total = int(psutil.virtual_memory().total)
        except ImportError:
            return _FALLBACK_LIMIT
    return total // 2


def build_bytes(m: int, n: int, kind: str = "gaussian", normalize: bool = False) -> int:
    """Peak bytes :class:`RandomProjection` ``(m, n, kind)`` allocates while it is built.

    Dense kinds draw the ``m x n`` matrix in float64 (8 bytes per entry, one more float64 copy
    when normalising) and keep it in the default dtype (4 bytes for float32); fourier keeps
    ``m`` int64 row indices out of a permutation of ``n``.
    """
    if kind == "fourier":
        return 8 * (n + m)
    stored = torch.empty((), dtype=torch.get_default_dtype()).element_size()
    return m * n * (8 + max(stored, 8 if normalize else 0))


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**29 else f"{nbytes / 2**20:.1f} MiB"


def check_build_memory(m: int, n: int, kind: str = "gaussian", normalize: bool = False) -> None:
    """Raise :class:`MatrixTooLarge`, naming the sizes, if building the operator would take more
    than :func:`memory_limit_bytes` (instead of an allocation failure, or the machine swapping)."""
    need, limit = build_bytes(m, n, kind, normalize), memory_limit_bytes()
    if need > limit:
        stored = torch.empty((), dtype=torch.get_default_dtype()).element_size()
        raise MatrixTooLarge(
            f"a {kind} random projection with m = {m} measurements of n = {n} pixels is an m x n matrix of "
            f"{_gib(m * n * stored)} ({torch.get_default_dtype()}), about {_gib(need)} while it is drawn; the limit is "
            f"{_gib(limit)} (half this machine's memory): use smaller images or fewer measurements")


def _default_image_shape(n: int) -> tuple[int, int, int]:
    side = math.isqrt(n)
    return (1, side, side) if side * side == n else (1, 1, n)


class RandomProjection(LinearOperator):
    """``y = A vec(x)`` with a fixed random ``m x n`` matrix, ``n = C * H * W``.

    Args:
        m: number of measurements.
        n: length of the flattened image ``x.reshape(B, -1)`` (row-major over ``C, H, W``).
        kind: ``"gaussian"`` (i.i.d. N(0, 1) entries), ``"bernoulli"`` (i.i.d. +1/-1 with
            probability 1/2 each) or ``"fourier"`` (``m`` distinct rows, drawn uniformly, of the
            unitary ``n``-point DFT matrix ``F[k, j] = exp(-2 pi i k j / n) / sqrt(n)``; needs
            ``m <= n``). By default the entries are not rescaled (as in the paper), so for the
            dense kinds ``||A x|| ~ sqrt(m) ||x||``; choose the noise level accordingly.
        seed: seed of the ``torch.Generator`` that draws the matrix; the same seed gives the
            same matrix. ``None`` draws a seed from torch's global generator (so
            ``torch.manual_seed`` makes it reproducible) and records it in ``self.seed``.
        image_shape: ``(C, H, W)`` of the images, with ``C * H * W == n``. ``A`` checks its
            input against it and ``A_adjoint`` returns it. Default: ``(1, s, s)`` when
            ``n = s * s`` is a perfect square (a grey square patch, e.g. ``n = 1024`` for
            the paper's 32 x 32 patches), otherwise ``(1, 1, n)``.
        normalize: ``False`` (default): entries as above. ``True``: scale ``A`` so that its
            entries have mean square ``1 / m``, i.e. columns of unit norm (in expectation for
            gaussian / bernoulli, exactly for fourier) and ``E[A^T A] = I``: gaussian entries
            ``N(0, 1/m)``, bernoulli ``+/-1/sqrt(m)``, fourier the unitary DFT rows times
            ``sqrt(n / m)`` (entries of modulus ``1 / sqrt(m)``). The same seed draws the same
            matrix up to this factor (``self.scale``). To keep the SNR of the unnormalised
            matrix with noise ``sigma``, use noise ``sigma / sqrt(m)`` (dense kinds).

    Shapes: ``x`` is ``(B, *image_shape)``; ``y`` is ``(B, m)`` for gaussian and bernoulli and
    ``(B, 2, m)`` (real, imaginary) for fourier. For fourier the adjoint is taken with respect to
    the real inner product of those 2 channels: ``A^T y = Re(F_rows^H (y_re + i y_im))`` (times
    ``self.scale``).

    Buffers (saved in ``state_dict``, since regenerating from the seed depends on torch's RNG):
    ``matrix`` ``(m, n)`` for the dense kinds (already scaled; default dtype, cast to the
    input's dtype per call, follows ``.double()``), ``rows`` ``(m,)`` int64 sorted DFT row indices for fourier
    (applied through an FFT, ``O(n log n)`` per image instead of ``O(m n)``).
    """

    def __init__(
        self,
        m: int,
        n: int,
        kind: str = "gaussian",
        seed: int | None = None,
        image_shape: tuple[int, int, int] | None = None,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be True or False, got {normalize!r}")
        for name, value in (("m", m), ("n", n)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        if kind == "fourier" and m > n:
            raise ValueError(f"a Fourier ensemble draws m distinct rows of the n-point DFT: need m <= n, got m={m}, n={n}")
        if image_shape is None:
            image_shape = _default_image_shape(n)
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3 or math.prod(image_shape) != n:
            raise ValueError(f"image_shape must be (C, H, W) with C * H * W == n = {n}, got {image_shape}")
        check_build_memory(m, n, kind, normalize)  # before drawing: one line rather than an allocation failure
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.m, self.n, self.kind, self.seed = m, n, kind, int(seed)
        self.normalize = normalize
        # Factor applied to the raw ensemble: entries of mean square 1/m when normalising.
        # (The fourier rows are stored as indices, so its factor is applied in A / A_adjoint.)
        if not normalize:
            self.scale = 1.0
        else:
            self.scale = math.sqrt(n / m) if kind == "fourier" else 1.0 / math.sqrt(m)
        self.image_shape: tuple[int, int, int] = image_shape  # type: ignore[assignment]

        generator = torch.Generator().manual_seed(self.seed)
        if kind == "fourier":
            rows = torch.randperm(n, generator=generator)[:m].sort().values
            self.register_buffer("rows", rows)
        else:
            if kind == "gaussian":
                # Drawn in float64 so that the matrix for a seed does not depend on the default dtype.
                matrix = torch.randn(m, n, generator=generator, dtype=torch.float64)
            else:
                matrix = torch.randint(0, 2, (m, n), generator=generator).to(torch.float64) * 2 - 1
            if normalize:
                matrix = matrix * self.scale
            self.register_buffer("matrix", matrix.to(torch.get_default_dtype()))

    @classmethod
    def from_reduction(
        cls,
        reduction: float,
        image_shape: tuple[int, int, int],
        kind: str = "gaussian",
        seed: int | None = None,
        normalize: bool = False,
    ) -> RandomProjection:
        """Build the operator with ``m = round(n / reduction)`` measurements, ``n = C * H * W``.

        The RIM paper states its random-projection tasks by the reduction ``p`` (Fig. 2):
        ``m = n / p``, e.g. ``p = 2`` halves the number of values.
        """
        if not reduction >= 1:
            raise ValueError(f"reduction must be >= 1 (m = n / reduction), got {reduction!r}")
        n = math.prod(int(s) for s in image_shape)
        m = max(1, round(n / reduction))
        return cls(m, n, kind=kind, seed=seed, image_shape=tuple(image_shape), normalize=normalize)

    @property
    def reduction(self) -> float:
        """Reduction in dimensionality ``p = n / m`` (the RIM paper's Fig. 2 parameter)."""
        return self.n / self.m

    def extra_repr(self) -> str:
        return (f"m={self.m}, n={self.n}, kind={self.kind!r}, seed={self.seed}, image_shape={self.image_shape}, "
                f"normalize={self.normalize}")

    def _measurement_layout(self) -> str:
        return f"(B, 2, {self.m})" if self.kind == "fourier" else f"(B, {self.m})"

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Project ``x`` of shape ``(B, *image_shape)``; returns ``(B, m)`` or ``(B, 2, m)`` (fourier)."""
        layout = "(B, " + ", ".join(str(s) for s in self.image_shape) + ")"
        check_tensor(x, "x", layout, ndims=(4,), spatial=self.image_shape, owner=type(self).__name__)
        flat = x.reshape(x.shape[0], self.n)
        if self.kind == "fourier":
            if x.shape[0] == 0:  # the FFT backends reject an empty batch
                return x.new_zeros((0, 2, self.m), dtype=compute_dtype(x.dtype))
            # No half-precision FFT on CPU (none at all for bfloat16): float16 / bfloat16 input is
            # transformed in float32 and the result stays float32, as with operators.fft.
            spectrum = torch.fft.fft(flat.to(compute_dtype(x.dtype)), norm="ortho")[:, self.rows]
            if self.scale != 1.0:
                spectrum = spectrum * self.scale
            return torch.stack((spectrum.real, spectrum.imag), dim=1)
        return flat @ self.matrix.to(x.dtype).T

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Adjoint of :meth:`A`: ``y`` of shape ``(B, m)`` or ``(B, 2, m)`` (fourier) to ``(B, *image_shape)``."""
        layout = self._measurement_layout()
        if self.kind == "fourier":
            check_tensor(y, "y", layout, ndims=(3,), channels=2, spatial=(self.m,), owner=type(self).__name__)
            if y.shape[0] == 0:
                return y.new_zeros((0, *self.image_shape), dtype=compute_dtype(y.dtype))
            # Zero-filling the unmeasured rows and applying the unitary inverse DFT is F_rows^H;
            # the real part is the adjoint for the real inner product on (real, imag) channels.
            work = y.to(compute_dtype(y.dtype))
            values = torch.complex(work[:, 0], work[:, 1])
            spectrum = values.new_zeros(y.shape[0], self.n).index_copy(1, self.rows, values)
            flat = torch.fft.ifft(spectrum, norm="ortho").real
            if self.scale != 1.0:
                flat = flat * self.scale
        else:
            check_tensor(y, "y", layout, ndims=(2,), spatial=(self.m,), owner=type(self).__name__)
            flat = y @ self.matrix.to(y.dtype)
        return flat.reshape(y.shape[0], *self.image_shape)
