"""Convolutional gated recurrent unit (GRU) for 2D images and 3D volumes.

A GRU (Cho et al. 2014; Chung et al. 2014) whose fully connected maps are replaced by
convolutions, so the hidden state is itself an image: shape ``(B, hidden, H, W)`` or
``(B, hidden, D, H, W)``. Used by the recurrent inference machine (``solvers/rim.py``).
"""
from __future__ import annotations

import torch
from torch import nn

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_TRANSPOSE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def conv_nd(dims: int, *, transpose: bool = False) -> type[nn.Module]:
    """The convolution class for ``dims`` spatial dimensions (2 -> ``Conv2d``, 3 -> ``Conv3d``)."""
    table = _CONV_TRANSPOSE if transpose else _CONV
    if dims not in table:
        raise ValueError(f"dims must be 2 or 3, got {dims!r}")
    return table[dims]


class ConvGRUCell(nn.Module):
    """One step of a convolutional GRU with the standard gating.

    With ``*`` a convolution, ``sigma`` the logistic function and ``o`` the element-wise product::

        r  = sigma(W_r * x + U_r * h + b_r)          reset gate
        z  = sigma(W_z * x + U_z * h + b_z)          update gate
        n  = tanh(W_n * x + b_n + r o (U_n * h + c_n))  candidate state
        h' = (1 - z) o n + z o h

    (the same convention as ``torch.nn.GRUCell``: the reset gate multiplies the recurrent term
    after its bias). All convolutions are "same" convolutions, so ``h'`` has the spatial size of
    ``x``.

    Args:
        in_channels: channels of the input ``x``.
        hidden_channels: channels of the state ``h``.
        kernel_size: kernel size of both the input and the recurrent convolutions (odd).
        dims: 2 for images ``(B, C, H, W)``, 3 for volumes ``(B, C, D, H, W)``.
        dilation: dilation of both convolutions.
        bias: whether the convolutions carry biases.
        padding_mode: ``"zeros"``, ``"replicate"``, ``"reflect"`` or ``"circular"`` (as in ``nn.Conv2d``).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = 3,
        dims: int = 2,
        dilation: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd so that the state keeps its size, got {kernel_size}")
        if in_channels < 1 or hidden_channels < 1:
            raise ValueError(f"channel counts must be positive, got in={in_channels}, hidden={hidden_channels}")
        conv = conv_nd(dims)
        padding = dilation * (kernel_size - 1) // 2
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.dims = dims
        # One convolution per source producing all three gates at once: fewer kernel launches
        # than six separate convolutions, same parameters.
        self.input_conv = conv(in_channels, 3 * hidden_channels, kernel_size, padding=padding,
                               dilation=dilation, bias=bias, padding_mode=padding_mode)
        self.hidden_conv = conv(hidden_channels, 3 * hidden_channels, kernel_size, padding=padding,
                                dilation=dilation, bias=bias, padding_mode=padding_mode)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Orthogonal recurrent kernels (per gate), default input kernels, zero biases.

        Orthogonal recurrent weights keep the repeated application of ``U`` from shrinking or
        blowing up the state over many iterations, which matters because a RIM is run for more
        steps at test time than in training.
        """
        self.input_conv.reset_parameters()
        with torch.no_grad():
            for gate_weight in self.hidden_conv.weight.chunk(3, dim=0):
                nn.init.orthogonal_(gate_weight)
            for conv in (self.input_conv, self.hidden_conv):
                if conv.bias is not None:
                    conv.bias.zero_()

    def initial_state(self, x: torch.Tensor) -> torch.Tensor:
        """Zero state for input ``x``: shape ``(B, hidden_channels, *x.shape[2:])``."""
        return x.new_zeros((x.shape[0], self.hidden_channels, *x.shape[2:]))

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """Advance the state by one step.

        Args:
            x: input, shape ``(B, in_channels, *spatial)`` with ``len(spatial) == dims``.
            h: previous state, shape ``(B, hidden_channels, *spatial)``; zeros when ``None``.

        Returns:
            The new state, shape ``(B, hidden_channels, *spatial)``.
        """
        if x.dim() != self.dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ConvGRUCell expects input of shape (B, {self.in_channels}, *{self.dims} spatial dims), "
                f"got {tuple(x.shape)}"
            )
        if h is None:
            h = self.initial_state(x)
        elif h.shape != (x.shape[0], self.hidden_channels, *x.shape[2:]):
            raise ValueError(
                f"ConvGRUCell state must have shape {(x.shape[0], self.hidden_channels, *x.shape[2:])}, "
                f"got {tuple(h.shape)}"
            )
        xr, xz, xn = self.input_conv(x).chunk(3, dim=1)
        hr, hz, hn = self.hidden_conv(h).chunk(3, dim=1)
        reset = torch.sigmoid(xr + hr)
        update = torch.sigmoid(xz + hz)
        candidate = torch.tanh(xn + reset * hn)
        # (1 - z) * n + z * h; written out because torch.lerp refuses mixed dtypes under autocast
        return candidate + update * (h - candidate)
