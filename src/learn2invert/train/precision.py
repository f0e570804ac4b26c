"""Mixed precision and ``torch.compile`` for the training loop (``train.precision``, ``train.compile``).

``train.precision``:

- ``fp32`` (default): plain float32, bit-for-bit the same as without this module;
- ``bf16``: the solver's forward pass runs under ``torch.autocast`` with bfloat16 (CPU and recent
  GPUs); no loss scaling is needed (bfloat16 has float32's exponent range);
- ``fp16``: autocast with float16 plus a ``GradScaler`` that scales the loss so small gradients
  do not underflow, and skips steps whose gradients overflow.

The loss is computed in float32 on float32 copies of the iterates, outside autocast. Operators
whose maths has no half-precision kernel (the FFTs of MRI) compute in float32 inside autocast
(see :mod:`learn2invert.operators.fft`). Measurements are simulated in float32.
"""
from __future__ import annotations

import contextlib
import warnings

import torch

from .config import ConfigError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"config key 'train.precision' must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(precision: str, device: torch.device):
    """The context the forward pass runs in: autocast to bf16/fp16, or nothing for fp32."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A ``GradScaler`` that is active for fp16 only (a pass-through otherwise)."""
    return torch.amp.GradScaler(device.type, enabled=check_precision(precision) == "fp16")


class CompiledOrEager:
    """Calls ``torch.compile(module)``; if compiling fails, warns once and calls ``module`` itself.

    Compilation happens lazily at the first call (and again on recompiles), so that is where a
    missing compiler, an unsupported Python or an op Dynamo cannot trace shows up. The eager
    module is the same object with the same parameters, so falling back mid-run changes nothing
    but speed.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.eager = module
        try:
            import torch._inductor.config as inductor_config

            # Inductor's conversion of convolutions to channels-last breaks the backward of
            # replicate padding (a stride assertion in replication_pad2d_backward, torch 2.13, CPU):
            # the MRI RIM failed in loss.backward(), outside the fallback below. Measured without
            # it on tiny models: RIM, i-RIM, U-Net, ADMM-Net and LUSER compile and train.
            inductor_config.layout_optimization = False
            self.compiled = torch.compile(module)
        except Exception as err:  # noqa: BLE001 - any failure means: run eagerly
            self._give_up(err)

    def _give_up(self, err: Exception) -> None:
        warnings.warn(f"train.compile: torch.compile does not work here ({type(err).__name__}: {err}); "
                      "training continues without compiling", RuntimeWarning, stacklevel=3)
        self.compiled = None

    @property
    def active(self) -> bool:
        return self.compiled is not None

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - the eager call below re-raises genuine model errors
                self._give_up(err)
        return self.eager(*args, **kwargs)


__all__ = ["PRECISIONS", "check_precision", "autocast", "grad_scaler", "CompiledOrEager"]
