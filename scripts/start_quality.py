"""Where untrained solvers start, on every built-in linear operator: the start-quality table.

    python scripts/start_quality.py [--out docs/benchmarks/start_quality]

Each operator (as ``l2i train`` builds it from ``operator.name``, with its default parameters)
measures the same 8 test-photograph patches (32x32, grey; for MRI the photograph is the real
part), with noise sigma 0.05 (1.0 for the unnormalised random projection, whose entries are
N(0, 1)). Every solver is untrained and seeded. The table gives each start's mean squared error
divided by that of the back-projection at its best scale, ``c A^T y`` with ``c`` fitted to the
truth: 1 means "as good as the best-scaled adjoint", which no untrained solver can beat by much.
Steps in ``absolute`` units use ``mu_0 = 1`` (ADMM's penalty ``rho_0 = 1``) whatever the operator;
``lipschitz`` divides the steps by ``||A||^2`` and multiplies ADMM's penalty by it (a power-iteration
estimate where the operator does not know it), and starts from ``A^T y / ||A||^2``; the i-RIM's
and RIM's ``init: scaled_adjoint`` starts from ``A^T y / ||A||^2``. The RIM's output layer
starts at zero by default (``output_init: random``: PyTorch's default, as before December 2026).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from learn2invert.data import NaturalPatches
from learn2invert.nn.prox.resnet import ResNetProx
from learn2invert.operators.generator import Measurement
from learn2invert.solvers.admm import ADMMNet
from learn2invert.solvers.deq4ip import DEQ4IP
from learn2invert.solvers.irim import IRIM
from learn2invert.solvers.rim import RIM
from learn2invert.solvers.unrolled import UnrolledProximalGradient
from learn2invert.train.config import load_config

# (label, operator.name, extra overrides): every built-in linear operator, the random projection
# both normalised (the default) and as raw N(0, 1) entries (||A||^2 ~ 600 at 32x32, m = n / 2)
OPERATORS = (
    ("denoising", "denoising", ()),
    ("gaussian_blur", "gaussian_blur", ()),
    ("inpainting", "inpainting", ()),
    ("super_resolution x2", "super_resolution", ()),
    ("random_projection (normalised)", "random_projection", ("operator.params={reduction: 2, normalize: true}",)),
    ("random_projection (raw N(0,1))", "random_projection", ("operator.params={reduction: 2, normalize: false}",
                                                             "operator.noise_sigma=1.0")),
    ("mri 4x", "mri", ()),
    ("mri 4x, 8 coils", "mri", ("operator.params={coils: 8}",)),
    ("ct (60 angles)", "ct", ()),
)
SOLVERS = ("unrolled, absolute", "unrolled, lipschitz", "deq4ip, absolute", "deq4ip, lipschitz",
           "admm, absolute", "admm, lipschitz", "i-rim, scaled_adjoint", "rim, random output", "rim, scaled_adjoint")


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.mean((a - b) ** 2))


def _solvers(channels: int) -> dict:
    """The untrained solvers, each built right after seeding so that every operator sees the same weights."""
    def seeded(build):
        torch.manual_seed(0)
        return build().eval()
    prox = lambda: ResNetProx(channels, features=8)  # noqa: E731
    return {
        "unrolled, absolute": seeded(lambda: UnrolledProximalGradient([prox()], folds=4, step_units="absolute")),
        "unrolled, lipschitz": seeded(lambda: UnrolledProximalGradient([prox()], folds=4, step_units="lipschitz")),
        "deq4ip, absolute": seeded(lambda: DEQ4IP(channels, depth=4, features=8, step_units="absolute")),
        "deq4ip, lipschitz": seeded(lambda: DEQ4IP(channels, depth=4, features=8)),
        "admm, absolute": seeded(lambda: ADMMNet(channels, stages=4, features=8, step_units="absolute")),
        "admm, lipschitz": seeded(lambda: ADMMNet(channels, stages=4, features=8, step_units="lipschitz")),
        "i-rim, scaled_adjoint": seeded(lambda: IRIM(channels=channels, steps=2, state_channels=max(4, channels),
                                                      hidden_channels=8, downsampling=(1, 2), init="scaled_adjoint")),
        "rim, random output": seeded(lambda: RIM(channels=channels, steps=2, conv_channels=8, hidden_channels=8,
                                                 init="scaled_adjoint", output_init="random")),
        "rim, scaled_adjoint": seeded(lambda: RIM(channels=channels, steps=2, conv_channels=8, hidden_channels=8,
                                                  init="scaled_adjoint")),
    }


def start_quality(samples: int = 8) -> dict:
    """``{operator label: {"adjoint": MSE ratio of plain A^T y, solver: MSE ratio, ...}}``,
    every ratio against the best-scaled back-projection's MSE (which is also given, as "best_mse")."""
    patches = NaturalPatches(split="test", patch_size=32, length=samples, seed=7)
    grey = torch.stack([patches[i] for i in range(samples)])
    table = {}
    for label, name, extra in OPERATORS:
        overrides = [f"operator.name={name}", "operator.noise_sigma=0.05", "data.patch_size=32", *extra]
        config = load_config(None, overrides)
        x = torch.cat([grey, torch.zeros_like(grey)], 1) if name == "mri" else grey
        y, operator, sigma = Measurement(config, tuple(x.shape[1:]))(x, torch.Generator().manual_seed(0))
        aty = operator.A_adjoint(y)
        c = float(torch.sum(aty * x) / torch.sum(aty * aty))
        best = _mse(c * aty, x)
        row = {"best_mse": best, "adjoint": _mse(aty, x) / best}
        with torch.no_grad():
            for solver_name, solver in _solvers(x.shape[1]).items():
                row[solver_name] = _mse(solver(y, operator, sigma=sigma)[-1], x) / best
        table[label] = row
    return table


def markdown(table: dict) -> str:
    columns = ("adjoint", *SOLVERS)
    lines = ["| operator | best-scaled A^T y (MSE) | " + " | ".join(columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for label, row in table.items():
        cells = [f"{row[c]:.3g}" for c in columns]
        lines.append(f"| {label} | {row['best_mse']:.2e} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--out", help="write OUT.md and OUT.json")
    args = parser.parse_args()
    table = start_quality(args.samples)
    text = markdown(table)
    print(text, end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{args.out}.md").write_text(text)
        Path(f"{args.out}.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
