"""Training and inference speed of the learned solvers on 4x single-coil MRI: ``l2i bench speed``.

For each model (RIM with the MRI cell, i-RIM trained invertibly and with plain autograd, U-Net)
at the sizes of the MRI configs: training steps per second (forward + backward + Adam step,
batch ``--batch``) and inference milliseconds per slice (batch 1, ``torch.no_grad``), medians
over ``--repeats`` timed calls after a warm-up. The models' calls are interleaved round by
round, so a busy machine slows all of them alike and the ratios stay meaningful.
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
        "irim (autograd)": lambda: IRIM(2, steps=8, state_channels=32, hidden_channels=32, memory="autograd"),
        "unet": lambda: UNet(2, features=32, depth=3),
    }


def _problem(batch: int, size: int):
    mask = operators.masks.random_mask((size,), 4.0, 0.08, seed=0).float().reshape(1, 1, 1, size)
    op = operators.SingleCoilMRI(mask.expand(batch, 1, size, size).contiguous())
    x = torch.randn(batch, 2, size, size)
    return op.A(x), op, x


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(size: int = 64, batch: int = 4, repeats: int = 3) -> list[dict]:
    torch.manual_seed(0)
    y, op, x = _problem(batch, size)
    y1, op1, _ = _problem(1, size)
    models = {name: build() for name, build in _models(size).items()}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-4) for name, m in models.items()}

    def train_step(name):
        loss = torch.mean((models[name](y, op, sigma=0.01)[-1] - x) ** 2)
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()

    def infer(name):
        with torch.no_grad():
            models[name](y1, op1, sigma=0.01)

    train_times = {name: [] for name in models}
    infer_times = {name: [] for name in models}
    for round_ in range(repeats + 1):  # round 0 is the warm-up
        for name, model in models.items():
            model.train()
            t = _seconds(lambda: train_step(name))
            model.eval()
            u = _seconds(lambda: infer(name))
            if round_:
                train_times[name].append(t)
                infer_times[name].append(u)
    records = []
    for name, model in models.items():
        train_s, infer_s = statistics.median(train_times[name]), statistics.median(infer_times[name])
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
    parser.add_argument("--json", default="runs/bench/speed.json", help="output JSON (a .md is written next to it; docs/: --json docs/benchmarks/speed.json)")
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
