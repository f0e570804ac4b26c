"""Training and inference speed of the learned solvers on 4x single-coil MRI: ``l2i bench speed``.

For each model (RIM with the MRI cell, i-RIM, U-Net) at the sizes of the MRI configs: training
steps per second (forward + backward + Adam step, batch ``--batch``) and inference milliseconds
per slice (batch 1, ``torch.no_grad``), medians over ``--repeats`` timed calls after warm-up.
Writes JSON and a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from .. import operators


def _models(size: int) -> dict:
    from ..solvers.irim import IRIM
    from ..solvers.rim import RIM
    from ..solvers.unet import UNet

    return {
        "rim": lambda: RIM(2, architecture="mri", steps=8),
        "irim": lambda: IRIM(2, steps=8, state_channels=32, hidden_channels=32),
        "unet": lambda: UNet(2, features=32, depth=3),
    }


def _problem(batch: int, size: int):
    mask = operators.masks.random_mask((size,), 4.0, 0.08, seed=0).float().reshape(1, 1, 1, size)
    op = operators.SingleCoilMRI(mask.expand(batch, 1, size, size).contiguous())
    x = torch.randn(batch, 2, size, size)
    return op.A(x), op, x


def _median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(size: int = 64, batch: int = 4, repeats: int = 3) -> list[dict]:
    torch.manual_seed(0)
    records = []
    y, op, x = _problem(batch, size)
    y1, op1, _ = _problem(1, size)
    for name, build in _models(size).items():
        model = build()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def train_step():
            loss = torch.mean((model(y, op, sigma=0.01)[-1] - x) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()

        def infer():
            with torch.no_grad():
                model(y1, op1, sigma=0.01)

        model.train()
        train_s = _median_seconds(train_step, repeats)
        model.eval()
        infer_s = _median_seconds(infer, repeats)
        records.append({"model": name, "image_size": size, "batch": batch, "parameters": sum(p.numel() for p in model.parameters()),
                        "train_steps_per_s": 1.0 / train_s, "train_step_seconds": train_s,
                        "inference_ms_per_slice": 1000.0 * infer_s, "threads": torch.get_num_threads()})
    return records


def markdown_table(records: list[dict]) -> str:
    lines = ["| model | parameters | image | batch | train steps/s | inference ms/slice |", "|---|---:|---|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['image_size']}x{r['image_size']} | {r['batch']} | "
                     f"{r['train_steps_per_s']:.2f} | {r['inference_ms_per_slice']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="l2i bench speed", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--batch", type=int, default=4, help="training batch size (default 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="docs/benchmarks/speed.json", help="output JSON (a .md is written next to it)")
    args = parser.parse_args(argv)
    records = measure(args.size, args.batch, args.repeats)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1))
    out.with_suffix(".md").write_text(markdown_table(records) + "\n")
    print(markdown_table(records))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
