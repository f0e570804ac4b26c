"""Time ``A`` and ``A^T`` of every forward operator: ``python -m learn2invert.bench.operator_speed``.

Prints a Markdown table of the median wall time of 10 calls (after 3 warm-up calls), batch 1,
float32, on the chosen device. Construction time is reported separately (the CT system matrix
is built once per operator).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from .. import operators


def _median_ms(fn, x: torch.Tensor, repeats: int = 10, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(repeats):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def cases(size: int, angles: int):
    """(name, constructor, image shape) for every operator at image size ``size``."""
    mask = operators.masks.random_mask((size,), 4, 0.08, seed=0)
    return [
        (f"ParallelBeamCT({size}, {angles})", lambda: operators.ParallelBeamCT(size, angles), (1, 1, size, size)),
        (f"SingleCoilMRI 4x ({size}x{size})", lambda: operators.SingleCoilMRI(mask), (1, 2, size, size)),
        ("GaussianBlur(9, 2.0)", lambda: operators.GaussianBlur(9, 2.0), (1, 1, size, size)),
        ("SuperResolution(2)", lambda: operators.SuperResolution(2), (1, 1, size, size)),
        ("Inpainting(50%)", lambda: operators.Inpainting(torch.rand(size, size) < 0.5), (1, 1, size, size)),
        ("RandomProjection gaussian 32x32, p=2", lambda: operators.RandomProjection(512, 1024, seed=0), (1, 1, 32, 32)),
        ("RandomProjection fourier 32x32, p=2", lambda: operators.RandomProjection(512, 1024, "fourier", seed=0), (1, 1, 32, 32)),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--angles", type=int, default=180)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print("| operator | build (ms) | A (ms) | A^T (ms) |")
    print("|---|---:|---:|---:|")
    for name, build, shape in cases(args.size, args.angles):
        start = time.perf_counter()
        op = build().to(device)
        built = 1e3 * (time.perf_counter() - start)
        x = torch.rand(shape, device=device)
        y = op.A(x)
        print(f"| {name} | {built:.0f} | {_median_ms(op.A, x):.2f} | {_median_ms(op.A_adjoint, y):.2f} |")


if __name__ == "__main__":
    main()
