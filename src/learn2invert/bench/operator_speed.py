"""Time ``A`` and ``A^T`` of every forward operator: ``l2i bench operators``.

Measures the median wall time of ``--repeats`` calls (10, after ``--warmup`` = 3 warm-up calls),
batch 1, float32, on the chosen device. Construction time is reported separately (the CT system
matrix is built once per operator). Prints a Markdown table and writes it with the records as
``OUT.md`` and ``OUT.json`` (``--out``, by default ``runs/bench/operators``; the numbers quoted in
``docs/BENCHMARKS.md`` are not rewritten).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from .. import operators

# Under runs/ (git-ignored), like the other benchmarks' trial outputs.
DEFAULT_OUT = "runs/bench/operators"


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


def measure(size: int, angles: int, device: torch.device, repeats: int = 10, warmup: int = 3,
            on_record: Callable[[dict], None] | None = None) -> list[dict]:
    """One record per operator of :func:`cases`: ``{"operator", "shape", "build_ms", "forward_ms",
    "adjoint_ms"}``, times in milliseconds (build: one call; A, A^T: medians of ``repeats``).
    ``on_record`` sees each record as soon as it is measured (the CT matrix takes a while)."""
    records = []
    for name, build, shape in cases(size, angles):
        start = time.perf_counter()
        op = build().to(device)
        built = 1e3 * (time.perf_counter() - start)
        x = torch.rand(shape, device=device)
        y = op.A(x)
        records.append({"operator": name, "shape": list(shape), "build_ms": built,
                        "forward_ms": _median_ms(op.A, x, repeats, warmup),
                        "adjoint_ms": _median_ms(op.A_adjoint, y, repeats, warmup)})
        if on_record is not None:
            on_record(records[-1])
    return records


TABLE_HEADER = ("| operator | build (ms) | A (ms) | A^T (ms) |", "|---|---:|---:|---:|")


def _row(r: dict) -> str:
    return f"| {r['operator']} | {r['build_ms']:.0f} | {r['forward_ms']:.2f} | {r['adjoint_ms']:.2f} |"


def markdown_table(records: list[dict]) -> str:
    return "\n".join([*TABLE_HEADER, *map(_row, records)])


def _at_least(minimum: int):
    """argparse type: an int >= ``minimum`` (a size or count of 0 would measure nothing)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="l2i bench operators", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=_at_least(1), default=128, help="image size in pixels (default 128)")
    parser.add_argument("--angles", type=_at_least(1), default=180, help="CT projection angles (default 180)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=_at_least(1), default=10, help="timed calls per operator (the median is reported)")
    parser.add_argument("--warmup", type=_at_least(0), default=3, help="untimed calls before them")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"output path without suffix: writes OUT.json and OUT.md (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    header = f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}"
    print(header)
    print("\n".join(TABLE_HEADER))
    records = measure(args.size, args.angles, device, args.repeats, args.warmup,
                      on_record=lambda r: print(_row(r), flush=True))
    table = markdown_table(records)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
              "size": args.size, "angles": args.angles, "repeats": args.repeats, "warmup": args.warmup,
              "records": records}
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(f"{header}, median of {args.repeats} calls\n\n{table}\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
