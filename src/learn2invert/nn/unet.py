"""The fastMRI U-Net (Ronneberger et al. 2015 as used by Zbontar et al., "fastMRI: An open dataset
and benchmarks for accelerated MRI", 2018, ``fastmri.models.Unet``) as an image-to-image network.

* each level: two 3x3 convolutions (no bias before a normalisation), each followed by the
  normalisation and LeakyReLU(0.2);
* ``depth`` down levels with ``features * 2**level`` channels, 2x2 max-pooling between levels,
  and a bottleneck block with ``features * 2**depth`` channels;
* up path: 2x2 transposed convolution (stride 2) + normalisation + LeakyReLU(0.2) halving the
  channels, concatenation with the skip connection of the same level, two 3x3 convolutions;
* a final 1x1 convolution to the image channels.

3D volumes ``(B, C, D, H, W)`` use 3x3x3 convolutions, but pooling and up-sampling act on H and
W only (kernel and stride ``(1, 2, 2)``): volumes in this library are thin slabs of slices.

:class:`UNetBackbone` is used twice: as the U-Net solver (:class:`learn2invert.solvers.unet.UNet`,
post-processing of ``A^T y``) and as a prox (:class:`learn2invert.nn.prox.unet.UNetProx`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("instance", "batch", "layer", "none")


def _norm(norm: str, channels: int, dims: int) -> nn.Module:
    """Normalisation layer: instance (fastMRI's, without affine parameters), batch, layer or none."""
    if norm == "instance":
        return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(channels)
    if norm == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels)
    if norm == "layer":  # one group: normalises over channels and space, batch-size independent
        return nn.GroupNorm(1, channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


class ConvBlock(nn.Module):
    """Two ``(3x3[x3] conv -> norm -> LeakyReLU(0.2))`` layers: ``(B, in, *S) -> (B, out, *S)``."""

    def __init__(self, in_channels: int, out_channels: int, dims: int, norm: str) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        bias = norm == "none"  # a bias right before a normalisation would be removed by it
        self.layers = nn.Sequential(
            conv(in_channels, out_channels, 3, padding=1, bias=bias),
            _norm(norm, out_channels, dims),
            nn.LeakyReLU(0.2, inplace=True),
            conv(out_channels, out_channels, 3, padding=1, bias=bias),
            _norm(norm, out_channels, dims),
            nn.LeakyReLU(0.2, inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class UpBlock(nn.Module):
    """Transposed convolution (kernel = stride = 2 in H, W) -> norm -> LeakyReLU(0.2): doubles H, W."""

    def __init__(self, in_channels: int, out_channels: int, dims: int, norm: str) -> None:
        super().__init__()
        if dims == 2:
            up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2, bias=norm == "none")
        else:
            up = nn.ConvTranspose3d(in_channels, out_channels, kernel_size=(1, 2, 2), stride=(1, 2, 2), bias=norm == "none")
        self.layers = nn.Sequential(up, _norm(norm, out_channels, dims), nn.LeakyReLU(0.2, inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class UNetBackbone(nn.Module):
    """fastMRI-style U-Net ``(B, C, *S) -> (B, C, *S)``: ``x + net(x)`` (``residual=True``) or ``net(x)``.

    Args:
        channels: image channels C (1 grey, 2 complex as real/imaginary, 3 RGB, ...); input and
            output of the network.
        dims: 2 for images ``(B, C, H, W)``, 3 for volumes ``(B, C, D, H, W)`` (no pooling along D).
        features: channels of the first level; level ``l`` has ``features * 2**l`` and the
            bottleneck ``features * 2**depth`` (fastMRI's ``chans``; 32 there).
        depth: number of pooling levels (fastMRI's ``num_pool_layers``; 4 there). H and W are
            reflect-padded to multiples of ``2**depth`` and cropped back, so any size
            ``>= 2**depth`` works.
        residual: return ``x + net(x)`` (default) instead of ``net(x)``; the output convolution then
            starts at zero, so the untrained network returns its input.
        norm: ``"instance"`` (fastMRI; no affine parameters, identical in train and eval mode),
            ``"batch"``, ``"layer"`` (GroupNorm with one group) or ``"none"``.
    """

    def __init__(
        self,
        channels: int,
        dims: int = 2,
        features: int = 32,
        depth: int = 3,
        residual: bool = True,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        for name, value, low in (("channels", channels, 1), ("features", features, 1), ("depth", depth, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.channels = channels
        self.dims = dims
        self.features = features
        self.depth = depth
        self.residual = bool(residual)
        self.norm = norm

        self.down = nn.ModuleList([ConvBlock(channels, features, dims, norm)])
        ch = features
        for _ in range(depth - 1):
            self.down.append(ConvBlock(ch, 2 * ch, dims, norm))
            ch *= 2
        self.bottleneck = ConvBlock(ch, 2 * ch, dims, norm)
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for _ in range(depth):
            self.up.append(UpBlock(2 * ch, ch, dims, norm))
            self.up_conv.append(ConvBlock(2 * ch, ch, dims, norm))
            ch //= 2
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.out = conv(features, channels, kernel_size=1)
        if self.residual:
            # Start as the identity map x0 -> x0: short trainings then start from the input image
            # (zero-filled MRI) instead of from a random perturbation of it.
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
        self._pool_kernel = 2 if dims == 2 else (1, 2, 2)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, dims={self.dims}, features={self.features}, depth={self.depth}, "
                f"residual={self.residual}, norm={self.norm!r}")

    def check_size(self, x: torch.Tensor) -> None:
        """Raise a ``ValueError`` unless H, W >= 2**depth and an instance-normalised bottleneck keeps
        more than one pixel."""
        multiple = 2**self.depth
        height, width = x.shape[-2:]
        if height < multiple or width < multiple:
            raise ValueError(
                f"this UNet (depth={self.depth}) needs H, W >= 2**depth = {multiple}, got image shape {tuple(x.shape)}"
            )
        padded = [-(-n // multiple) * multiple for n in (height, width)]
        bottleneck = (padded[0] // multiple) * (padded[1] // multiple) * (x.shape[2] if self.dims == 3 else 1)
        if self.norm == "instance" and bottleneck < 2:
            raise ValueError(
                f"instance normalisation needs more than one pixel at the bottleneck: an image of shape "
                f"{tuple(x.shape)} shrinks to 1 pixel after depth={self.depth} poolings; use a smaller depth"
            )

    def net(self, x: torch.Tensor) -> torch.Tensor:
        """The U-Net itself on images whose H, W are multiples of ``2**depth``: ``(B, C, *S) -> (B, C, *S)``."""
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = F.max_pool2d(h, 2) if self.dims == 2 else F.max_pool3d(h, self._pool_kernel)
        h = self.bottleneck(h)
        for up, conv in zip(self.up, self.up_conv):
            h = conv(torch.cat([up(h), skips.pop()], dim=1))
        return self.out(h)

    def map_image(self, x: torch.Tensor) -> torch.Tensor:
        """The network on an image of any size it takes (see :meth:`check_size`; not checked here):
        reflect-pad H, W to multiples of ``2**depth``, :meth:`net`, crop back, add ``x`` if residual."""
        multiple = 2**self.depth
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % multiple, -width % multiple
        # (left, right, top, bottom[, front, back]); reflect needs pad < size, guaranteed by H, W >= 2**depth.
        pad = [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2] + ([0, 0] if self.dims == 3 else [])
        h = F.pad(x, pad, mode="reflect") if pad_h or pad_w else x
        out = self.net(h)
        out = out[..., pad[2]:pad[2] + height, pad[0]:pad[0] + width]
        return x + out if self.residual else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`map_image` after :meth:`check_size`: ``(B, C, *S) -> (B, C, *S)``."""
        self.check_size(x)
        return self.map_image(x)


__all__ = ["ConvBlock", "NORMS", "UNetBackbone", "UpBlock"]
