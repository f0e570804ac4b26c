"""Training step time of a config in fp32 against bf16 / fp16 autocast: ``l2i bench precision``.

The same model (same initial weights), data and measurements in every precision; steps are
interleaved (one step of each precision per round) so that machine load hits all of them alike.
A step is forward under autocast, loss in float32, backward, gradient clipping and the optimiser
update, as in ``l2i train``. Prints and writes the median and mean step time per precision.

    l2i bench precision configs/mri_irim_4x.yaml --steps 20 --json docs/benchmarks/precision.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def measure(config_path: str, precisions: list[str], steps: int = 20, warmup: int = 2, threads: int = 1) -> dict:
    from ..data.items import item_shape, split_item, stack_items
    from ..train.config import load_config
    from ..train.datasets import build_dataset
    from ..train.experiment import build_optimizer, build_solver
    from ..operators.generator import Measurement, measure as simulate
    from ..train.loop import sample_generators
    from ..train.losses import iterate_loss
    from ..train.precision import autocast

    torch.set_num_threads(threads)
    config = load_config(config_path)
    data = build_dataset(config, "train")
    shape = item_shape(data[0])
    measurement = Measurement(config, shape)
    batch = config["train"]["batch_size"]
    batches = []
    for k in range(4):
        index = list(range(k * batch, (k + 1) * batch))
        # kspace: the items' own coil k-space (data.params.own_coils), undersampled; else None
        x, kspace = split_item(stack_items([data[i % len(data)] for i in index]))
        batches.append((x, *simulate(measurement, x, sample_generators(config["seed"], 0, index), kspace=kspace)))
    models = {}
    for name in precisions:
        torch.manual_seed(config["seed"])
        solver = build_solver(config, shape)
        models[name] = (solver, build_optimizer(config, solver)[0], [])
    device = torch.device("cpu")
    loss_cfg = config["loss"]
    for k in range(warmup + steps):
        for name, (solver, optimizer, times) in models.items():
            x, y, op, sigma = batches[k % len(batches)]
            start = time.perf_counter()
            with autocast(name, device):
                iterates = solver(y, op, sigma=sigma)
            loss = iterate_loss([it.float() for it in iterates], x, loss_cfg["name"], loss_cfg["weights"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(solver.parameters(), 1.0)
            optimizer.step()
            if k >= warmup:
                times.append(time.perf_counter() - start)
    return {"config": config_path, "batch": batch, "steps": steps, "threads": threads,
            "step_ms": {name: {"median": 1e3 * statistics.median(t), "mean": 1e3 * statistics.fmean(t)}
                        for name, (_, _, t) in models.items()}}


def markdown(result: dict) -> str:
    base = result["step_ms"].get("fp32", {}).get("median")
    lines = [f"`{result['config']}`, batch {result['batch']}, {result['steps']} interleaved steps, {result['threads']} thread(s)",
             "", "| precision | median step (ms) | mean step (ms) | vs fp32 |", "|---|---:|---:|---:|"]
    for name, t in result["step_ms"].items():
        ratio = f"{t['median'] / base:.2f}x" if base else "-"
        lines.append(f"| {name} | {t['median']:.0f} | {t['mean']:.0f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="l2i bench precision", description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the result here (and a .md next to it)")
    args = parser.parse_args(argv)
    result = measure(args.config, args.precisions, args.steps, threads=args.threads)
    text = markdown(result)
    print(text)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        out.with_suffix(".md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
