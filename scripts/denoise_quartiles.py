"""Where a denoiser loses to TV: test-photograph patches split by quartile of TV's PSNR.

    python scripts/denoise_quartiles.py RUN_DIR [--sigma 25] [--tv-weight 0.1] [--samples 256]

Draws ``--samples`` 32x32 patches of the held-out test photographs (seed 123, another draw than
``l2i bench compare``'s), adds Gaussian noise of ``--sigma``/255, denoises them with the run's last
weights and with TV (``--tv-weight``: the weight the validation search chose at that sigma), and
prints each method's mean PSNR per quartile of TV's per-patch PSNR (flattest patches last).
"""
import argparse

import numpy as np
import torch

from learn2invert import data, operators, solvers
from learn2invert.inference import load_solver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--sigma", type=float, default=25.0, help="noise level, /255")
    parser.add_argument("--tv-weight", type=float, default=0.1)
    parser.add_argument("--samples", type=int, default=256)
    args = parser.parse_args()
    model = load_solver(args.run, weights="last")[0].eval()
    patches = data.NaturalPatches(split="test", patch_size=32, length=args.samples, seed=123)
    x = torch.stack([patches[i] for i in range(args.samples)])
    sigma = args.sigma / 255
    y = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rim = model(y, operators.Denoising(), sigma=sigma)[-1]
        tv = solvers.TVSolver(args.tv_weight, iterations=200)(y, operators.Denoising())[-1]

    def psnr(estimate: torch.Tensor) -> np.ndarray:  # per patch, peak 1
        return (-10 * torch.log10(((estimate - x) ** 2).flatten(1).mean(1))).numpy()

    p_rim, p_tv = psnr(rim), psnr(tv)
    print(f"all patches: model {p_rim.mean():.2f} dB, TV {p_tv.mean():.2f} dB")
    for q, part in enumerate(np.array_split(np.argsort(p_tv), 4)):
        print(f"TV quartile {q + 1}: TV {p_tv[part].mean():.2f} dB, model {p_rim[part].mean():.2f} dB, "
              f"difference {(p_rim - p_tv)[part].mean():+.2f} dB")


if __name__ == "__main__":
    main()
