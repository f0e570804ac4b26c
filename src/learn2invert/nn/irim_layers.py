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
    """A 1x1 convolution: ``matrix`` ``(C, C)`` applied to the channel axis of ``x`` ``(B, C, *S)``."""
    return torch.einsum("ij,bj...->bi...", matrix, x)


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
    """One i-RIM layer ``y = U^T couple(U x)`` (eqs. 12-15) with an O(1)-memory :meth:`reverse`.

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = householder_matrix(self.vectors)
        xp = channel_matmul(u, x)
        x1, x2 = xp[:, : self.split], xp[:, self.split :]
        return channel_matmul(u.T, torch.cat([x1, x2 + self.block(x1)], dim=1))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        u = householder_matrix(self.vectors)
        yp = channel_matmul(u, y)
        y1, y2 = yp[:, : self.split], yp[:, self.split :]
        return channel_matmul(u.T, torch.cat([y1, y2 - self.block(y1)], dim=1))

    def reverse(self, y: torch.Tensor, grad_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Rebuild ``x`` and back-propagate with one evaluation of the residual block.

        The 1x1 projections are linear, so their backward is written out (matrix products and
        channel-by-channel reductions over batch and pixels) instead of re-run under autograd;
        the block's single output gives both ``x'2 = y'2 - G(x'1)`` and, through its graph, the
        block's backward.
        """
        block_params = [p for p in self.block.parameters() if p.requires_grad]
        with torch.enable_grad():
            u = householder_matrix(self.vectors)
        uc = u.detach()
        # Output projection y = U^T y':  y' = U y,  dL/dy' = U dL/dy,  dL/dU += y' (dL/dy)^T.
        yp = channel_matmul(uc, y)
        g_yp = channel_matmul(uc, grad_y)
        g_u = torch.einsum("bj...,bi...->ji", yp, grad_y)
        # Coupling: one block evaluation serves the inversion and the backward.
        with torch.enable_grad():
            x1 = yp[:, : self.split].detach().requires_grad_(True)
            f = self.block(x1)
            grads = local_backward(f, [x1, *block_params], g_yp[:, self.split :])
        xp = torch.cat([yp[:, : self.split], yp[:, self.split :] - f.detach()], dim=1)
        g_x1 = g_yp[:, : self.split] if grads[0] is None else g_yp[:, : self.split] + grads[0]
        g_xp = torch.cat([g_x1, g_yp[:, self.split :]], dim=1)
        # Input projection x' = U x:  x = U^T x',  dL/dx = U^T dL/dx',  dL/dU += (dL/dx') x^T.
        x = channel_matmul(uc.T, xp)
        g_x = channel_matmul(uc.T, g_xp)
        g_u = g_u + torch.einsum("bi...,bj...->ij", g_xp, x)
        by_id = {id(p): g for p, g in zip(block_params, grads[1:])}
        if self.vectors.requires_grad:
            (by_id[id(self.vectors)],) = local_backward(u, [self.vectors], g_u)
        return x, g_x, [by_id.get(id(p)) for p in self.trainable_parameters()]


__all__ = ["householder_matrix", "channel_matmul", "DownsamplingResidualBlock", "IRIMLayer"]
