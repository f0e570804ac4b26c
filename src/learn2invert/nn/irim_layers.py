"""The i-RIM's invertible layer: orthogonal 1x1 convolution + additive coupling (Putzky & Welling 2019, Sec. 2.2).

::

    x' = U x                    U orthogonal 1x1 convolution (eq. 12)
    y'1 = x'1,  y'2 = x'2 + G(x'1)                      (eqs. 13-14)
    y  = U^T y'                 back to the basis of x   (eq. 15)

``U`` is a product of D Householder reflections ``H_k = I - 2 v_k v_k^T / ||v_k||^2`` (Sec. 2.2.1,
D = 3), so ``U^-1 = U^T`` and the layer never amplifies or shrinks the state. ``G`` is the residual
block of Sec. 2.2.2 (:class:`DownsamplingResidualBlock`).

Shapes: the state is ``(B, C, H, W)`` (2D) or ``(B, C, D, H, W)`` (3D); ``C`` is split as
``C // 2`` passed through and ``C - C // 2`` updated.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .conv_gru import conv_nd
from .invertible import InvertibleModule, local_backward


def householder_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """``U = H_D ... H_1`` from the rows of ``vectors`` ``(D, C)``: an orthogonal ``(C, C)`` matrix."""
    c = vectors.shape[1]
    u = torch.eye(c, dtype=vectors.dtype, device=vectors.device)
    for v in vectors:
        v = v / v.norm().clamp_min(1e-12)
        u = u - 2.0 * torch.outer(v, v @ u)  # H_k applied on the left: (I - 2 v v^T) U
    return u


def channel_matmul(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution: ``matrix`` ``(K, C)`` applied to the channel axis of ``x`` ``(B, C, *S)`` -> ``(B, K, *S)``.

    Written as a batched matrix product (2-3x faster on the CPU than ``einsum`` or ``conv2d``).
    """
    b, c = x.shape[:2]
    return (matrix @ x.reshape(b, c, -1)).reshape(b, matrix.shape[0], *x.shape[2:])


def channel_outer(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum over batch and pixels of a x^T``: ``(B, K, *S)``, ``(B, C, *S)`` -> ``(K, C)``, the
    gradient of a 1x1 convolution's matrix."""
    b = a.shape[0]
    return (a.reshape(b, a.shape[1], -1) @ x.reshape(b, x.shape[1], -1).transpose(1, 2)).sum(0)


class DownsamplingResidualBlock(nn.Module):
    """``G`` of the i-RIM layer: strided conv (kernel = stride = d) -> 3x3 conv -> transposed conv (d) -> GLU.

    ReLU between the convolutions; weight normalisation on all three; no bias on the last
    (paper Sec. 2.2.2). The strided convolution is a d x d pixel shuffle followed by a 1x1 mix, so
    the block sees a d-times wider context at d^2-times less cost. In 3D the depth axis is not
    downsampled (kernel/stride ``(1, d, d)``), as the issue asks and the slices are few.

    Args:
        in_channels, out_channels: channels of ``x'1`` and ``x'2``.
        hidden_channels: k, channels of the two hidden layers.
        downsampling: d >= 1; the spatial size must be divisible by it.
        dims: 2 or 3.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, downsampling: int, dims: int = 2) -> None:
        super().__init__()
        if downsampling < 1:
            raise ValueError(f"downsampling must be >= 1, got {downsampling}")
        d = downsampling
        self.downsampling, self.dims = d, dims
        k = (1, d, d) if dims == 3 else (d, d)
        conv, convt = conv_nd(dims), conv_nd(dims, transpose=True)
        self.down = weight_norm(conv(in_channels, hidden_channels, k, stride=k))
        self.mid = weight_norm(conv(hidden_channels, hidden_channels, 3, padding=1))
        self.up = weight_norm(convt(hidden_channels, 2 * out_channels, k, stride=k, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.down(x))
        h = F.relu(self.mid(h))
        return F.glu(self.up(h), dim=1)


class IRIMLayer(InvertibleModule):
    """One i-RIM layer ``y = U^T couple(U x)`` (eqs. 12-15) with an O(1)-memory :meth:`invert_and_backward`.

    Args:
        channels: C, channels of the state.
        hidden_channels: k of the residual block.
        downsampling: d of the residual block.
        householder: D, number of Householder reflections in ``U`` (paper: 3).
        dims: 2 or 3.
        zero_init: start the block's last convolution at zero (weight-norm scale g = 0), so the
            layer starts as the identity and a deep stack starts as the identity map. Not in the
            paper; it lets short (laptop-scale) trainings start from the initial estimate instead
            of from a random perturbation of it. g still receives gradients, so the block learns.
    """

    def __init__(self, channels: int, hidden_channels: int = 64, downsampling: int = 1, householder: int = 3,
                 dims: int = 2, zero_init: bool = False) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"an invertible layer needs >= 2 channels to couple, got {channels}")
        if householder < 1:
            raise ValueError(f"householder must be >= 1, got {householder}")
        self.split = channels // 2
        self.vectors = nn.Parameter(torch.randn(householder, channels))
        self.block = DownsamplingResidualBlock(self.split, channels - self.split, hidden_channels, downsampling, dims)
        if zero_init:
            with torch.no_grad():
                self.block.up.parametrizations.weight.original0.zero_()

    # Since U^T U = I, eqs. 12-15 reduce to  y = x + U2^T G(U1 x)  with U1 = U[:split] and
    # U2 = U[split:]: two half-size projections instead of two full ones (the projections cost as
    # much as the residual block at 32 channels).
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = householder_matrix(self.vectors)
        return x + channel_matmul(u[self.split :].T, self.block(channel_matmul(u[: self.split], x)))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        # The coupling leaves x'1 unchanged, so U1 y = U1 x.
        u = householder_matrix(self.vectors)
        return y - channel_matmul(u[self.split :].T, self.block(channel_matmul(u[: self.split], y)))

    def invert_and_backward(self, y: torch.Tensor, grad_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Rebuild ``x`` and back-propagate with one evaluation of the residual block.

        With ``y = x + U2^T G(U1 x)``: ``dL/dx = dL/dy + U1^T J_G^T U2 dL/dy``, ``dL/dU2 = G(U1 x) (dL/dy)^T``
        and ``dL/dU1 = (J_G^T U2 dL/dy) x^T`` (summed over batch and pixels). The block's single
        output gives both ``x = y - U2^T G(U1 y)`` and, through its graph, ``J_G^T``.
        """
        block_params = [p for p in self.block.parameters() if p.requires_grad]
        with torch.enable_grad():
            u = householder_matrix(self.vectors)
        u1, u2 = u.detach()[: self.split], u.detach()[self.split :]
        with torch.enable_grad():
            x1 = channel_matmul(u1, y).requires_grad_(True)
            f = self.block(x1)
            grads = local_backward(f, [x1, *block_params], channel_matmul(u2, grad_y))
        f = f.detach()
        x = y - channel_matmul(u2.T, f)
        g_x1 = grads[0] if grads[0] is not None else torch.zeros_like(x1)
        g_x = grad_y + channel_matmul(u1.T, g_x1)
        by_id = {id(p): g for p, g in zip(block_params, grads[1:])}
        if self.vectors.requires_grad:
            g_u = torch.cat([channel_outer(g_x1, x), channel_outer(f, grad_y)])
            (by_id[id(self.vectors)],) = local_backward(u, [self.vectors], g_u)
        return x, g_x, [by_id.get(id(p)) for p in self.trainable_parameters()]


__all__ = ["householder_matrix", "channel_matmul", "channel_outer", "DownsamplingResidualBlock", "IRIMLayer"]
