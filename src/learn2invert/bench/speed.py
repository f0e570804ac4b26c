"""Training and inference speed of the learned solvers on 4x single-coil MRI, against the CPU's own limit: ``l2i bench speed``.

For each model, at the sizes of the shipped/pretrained MRI configs (``configs/pretrained/``):

- training steps per second (forward + backward + Adam step, batch ``--batch``) and inference
  milliseconds per slice (batch 1, ``torch.no_grad``), medians over ``--repeats`` timed calls
  after a warm-up; the models' calls are interleaved round by round, so a busy machine slows all
  of them alike and the ratios stay meaningful;
- the floating-point operations one training step performs (counted per ATen operator with
  :mod:`learn2invert.bench.flops`, recomputations included) and the achieved GFLOP/s;
- the practical limit: the GFLOP/s of a plain 3x3 convolution with the model's channel width
  (forward + backward, same batch and image size), timed in the same rounds; the table gives the
  model's share of it;
- the share of a training step that drawing the batch and simulating its measurements takes
  (``BrainSliceMix`` + per-sample masks and noise, as ``l2i train`` does in its main process);
- with ``--compile``, each model also as ``train.compile: true`` trains it (``torch.compile``
  through :class:`~learn2invert.train.precision.CompiledOrEager`, a copy with the same weights),
  timed in the same rounds, with its compile time (the warm-up call) and whether compiling
  worked or fell back to eager. Its FLOPs are the eager model's (the same arithmetic);
- with ``--channels-last``, each model also with its weights in channels-last memory format (a
  copy with the same weights; PyTorch's CPU convolutions then compute and return channels-last
  tensors, which the element-wise ops keep), timed in the same rounds.

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
from .flops import count_flops

# Solver sections of configs/pretrained/mri_*.yaml, and the channel width of each model's main
# convolutions (the microbenchmark's width).
MODELS = {
    "rim": ({"name": "rim", "params": {"architecture": "mri", "steps": 8, "eps_init": 1.0}}, 64),
    "irim": ({"name": "irim", "params": {"steps": 8, "state_channels": 32, "hidden_channels": 32,
                                         "downsampling": [1, 2, 4, 4, 2, 1], "init": "adjoint"}}, 32),
    "irim (autograd)": ({"name": "irim", "params": {"steps": 8, "state_channels": 32, "hidden_channels": 32,
                                                    "downsampling": [1, 2, 4, 4, 2, 1], "init": "adjoint",
                                                    "memory": "autograd"}}, 32),
    "unet": ({"name": "unet", "params": {"features": 32, "depth": 3}}, 32),
    "admm": ({"name": "admm", "params": {"stages": 8, "features": 32, "cg_iterations": 2}}, 32),
    "luser_dw": ({"name": "unrolled", "params": {"prox": "luser", "folds": 8, "shared": False, "init": "adjoint",
                                                 "step_init": 1.0, "prox_params": {"forward_solver": {"max_iter": 8},
                                                                                   "backward_solver": {"max_iter": 8}}}}, 64),
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


class _ConvLimit:
    """A 3x3 convolution ``width -> width`` on ``(batch, width, size, size)``: forward + backward (input and weight)."""

    def __init__(self, width: int, batch: int, size: int) -> None:
        self.conv = torch.nn.Conv2d(width, width, 3, padding=1)
        self.x = torch.randn(batch, width, size, size, requires_grad=True)
        self.flops = 3 * 2 * batch * size * size * width * width * 9  # forward, grad input, grad weight

    def __call__(self) -> None:
        self.conv.zero_grad(set_to_none=True)
        out = self.conv(self.x)
        out.backward(torch.ones_like(out))


def _data_seconds(config_path: str | Path | None, batch: int, repeats: int) -> tuple[float, float]:
    """Median seconds to draw a training batch of a config (default: the shipped i-RIM's) and simulate its measurements."""
    from ..data.items import item_shape, split_item, stack_items
    from ..pretrained import path as model_path
    from ..train.config import load_config
    from ..train.datasets import build_dataset
    from ..operators.generator import Measurement, measure as simulate
    from ..train.loop import sample_generators

    config = load_config(config_path or model_path("mri_irim") / "config.yaml")
    data = build_dataset(config, "train")
    measurement = Measurement(config, item_shape(data[0]))
    draw, sim = [], []
    for round_ in range(repeats + 1):
        index = list(range(round_ * batch, (round_ + 1) * batch))
        start = time.perf_counter()
        # kspace: the items' own coil k-space (data.params.own_coils), undersampled; else None
        x, kspace = split_item(stack_items([data[i] for i in index]))
        middle = time.perf_counter()
        simulate(measurement, x, sample_generators(config["seed"], 0, index), kspace=kspace)
        if round_:
            draw.append(middle - start)
            sim.append(time.perf_counter() - middle)
    return statistics.median(draw), statistics.median(sim)


COMPILED = " (compiled)"
CHANNELS_LAST = " (channels-last)"


def measure(size: int = 64, batch: int = 4, repeats: int = 3, only: list[str] | None = None,
            data_config: str | Path | None = None, compile: bool = False, channels_last: bool = False) -> dict:
    """Time, count and compare the models (see the module docstring); ``data_config`` is the
    config whose batches are drawn for the data share (default: the shipped ``mri_irim``'s);
    ``compile`` adds each model's ``torch.compile`` twin, ``channels_last`` its channels-last twin."""
    import copy

    from ..train.experiment import build_solver
    from ..train.precision import CompiledOrEager

    base_names = only or list(MODELS)
    torch.manual_seed(0)
    y, op, x = _problem(batch, size)
    y1, op1, _ = _problem(1, size)
    models, calls, optimizers = {}, {}, {}  # modules (train/eval, parameters) and what is called
    for name in base_names:
        torch.manual_seed(0)
        models[name] = build_solver({"solver": MODELS[name][0]}, (2, size, size))
        calls[name] = models[name]
        if compile:
            twin = models[name + COMPILED] = copy.deepcopy(models[name])
            calls[name + COMPILED] = CompiledOrEager(twin)
        if channels_last:
            twin = models[name + CHANNELS_LAST] = copy.deepcopy(models[name]).to(memory_format=torch.channels_last)
            calls[name + CHANNELS_LAST] = twin
    names = list(models)
    for name in names:
        optimizers[name] = torch.optim.Adam(models[name].parameters(), lr=1e-4)
    limits = {w: _ConvLimit(w, batch, size) for w in sorted({MODELS[n][1] for n in base_names})}

    def train_step(name):
        loss = torch.mean((calls[name](y, op, sigma=0.01)[-1] - x) ** 2)
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()

    def infer(name):
        with torch.no_grad():
            calls[name](y1, op1, sigma=0.01)

    train_times = {name: [] for name in names}
    infer_times = {name: [] for name in names}
    limit_times = {w: [] for w in limits}
    flops, warmup = {}, {}
    for round_ in range(repeats + 1):  # round 0 is the warm-up (compiling), and counts the FLOPs
        for name in names:
            models[name].train()
            if not round_ and not name.endswith((COMPILED, CHANNELS_LAST)):
                flops[name] = count_flops(lambda: train_step(name))
            t = _seconds(lambda: train_step(name))
            models[name].eval()
            u = _seconds(lambda: infer(name))
            if round_:
                train_times[name].append(t)
                infer_times[name].append(u)
            else:
                warmup[name] = t + u
        for w, limit in limits.items():
            t = _seconds(limit)
            if round_:
                limit_times[w].append(t)
    limit_gflops = {w: limits[w].flops / statistics.median(t) / 1e9 for w, t in limit_times.items()}
    records = []
    for name in names:
        base = name.removesuffix(COMPILED).removesuffix(CHANNELS_LAST)
        model, width, count = models[name], MODELS[base][1], flops[base]
        train_s, infer_s = statistics.median(train_times[name]), statistics.median(infer_times[name])
        gflops = count.total / train_s / 1e9
        compiled = {}
        if name.endswith(COMPILED):  # did torch.compile run, or did CompiledOrEager fall back to eager?
            compiled = {"compiled": calls[name].active, "warmup_seconds": warmup[name]}
        records.append({"model": name, "image_size": size, "batch": batch, **compiled,
                        "parameters": sum(p.numel() for p in model.parameters()),
                        "train_steps_per_s": 1.0 / train_s, "train_step_seconds": train_s,
                        "inference_ms_per_slice": 1000.0 * infer_s,
                        "train_step_gflop": count.total / 1e9,
                        "gflop_by_operator": {k: v / 1e9 for k, v in sorted(count.by_operator.items())},
                        "achieved_gflops": gflops, "conv_width": width, "conv_limit_gflops": limit_gflops[width],
                        "share_of_limit": gflops / limit_gflops[width], "threads": torch.get_num_threads()})
    draw_s, simulate_s = _data_seconds(data_config, batch, repeats)
    source = str(data_config) if data_config else "pretrained mri_irim (BrainSliceMix 64x64, masks 2-8x, noise)"
    return {"models": records, "conv_limit_gflops": limit_gflops,
            "data": {"batch": batch, "draw_seconds": draw_s, "simulate_seconds": simulate_s, "config": source}}


def markdown_table(result: dict) -> str:
    lines = ["| model | parameters | train steps/s | inference ms/slice | GFLOP/step | GFLOP/s | 3x3 conv limit (width) | share of limit |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["models"]:
        name = r["model"]
        if "compiled" in r:  # "rim (compiled)" -> "rim (compiled; warm-up 73 s)" or "rim (fell back to eager; ...)"
            state = "compiled" if r["compiled"] else "fell back to eager"
            name = f"{name.removesuffix(COMPILED)} ({state}; warm-up {r['warmup_seconds']:.0f} s)"
        lines.append(f"| {name} | {r['parameters']:,} | {r['train_steps_per_s']:.2f} | {r['inference_ms_per_slice']:.1f} | "
                     f"{r['train_step_gflop']:.1f} | {r['achieved_gflops']:.1f} | {r['conv_limit_gflops']:.1f} ({r['conv_width']}) | "
                     f"{100 * r['share_of_limit']:.0f} % |")
    d = result["data"]
    steps = {r["model"]: r["train_step_seconds"] for r in result["models"]}
    shares = ", ".join(f"{100 * (d['draw_seconds'] + d['simulate_seconds']) / s:.1f} % of a {m} step" for m, s in steps.items())
    lines += ["", f"Data per batch of {d['batch']} ({d['config']}): drawing {1e3 * d['draw_seconds']:.1f} ms, "
                  f"simulating measurements {1e3 * d['simulate_seconds']:.1f} ms = {shares}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="l2i bench speed", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--batch", type=int, default=4, help="training batch size (default 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=sorted(MODELS), help="measure only these models")
    parser.add_argument("--compile", action="store_true",
                        help="also time each model under torch.compile (train.compile: true), in the same rounds")
    parser.add_argument("--channels-last", action="store_true",
                        help="also time each model with its weights in channels-last memory format, in the same rounds")
    parser.add_argument("--json", default="runs/bench/speed.json", help="output JSON (a .md is written next to it; docs/: --json docs/benchmarks/speed.json)")
    args = parser.parse_args(argv)
    result = measure(args.size, args.batch, args.repeats, args.only, compile=args.compile,
                     channels_last=args.channels_last)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown_table(result) + "\n")
    print(markdown_table(result))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
