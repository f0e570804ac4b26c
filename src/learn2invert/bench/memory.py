"""Training memory of the iterative solvers versus depth: ``l2i bench memory``.

Each record is one training step (forward + backward of an MSE loss on a simulated 4x
single-coil MRI problem) measured in a fresh subprocess, so that no allocator cache or earlier
peak leaks between records:

- ``peak_bytes``: the peak memory of the step above the memory held just before it. On CUDA,
  ``torch.cuda.max_memory_allocated``; on the CPU, the process's resident-set high-water mark
  (``VmHWM``, reset through ``/proc/self/clear_refs``) minus its resident set before the step.
- ``saved_bytes``: the bytes autograd saved for backward (distinct storages, parameters
  excluded), counted with ``torch.autograd.graph.saved_tensors_hooks``; deterministic.
- ``step_seconds``: wall time of the measured step (after one warm-up step).

Run ``l2i bench memory [--json OUT.json] [--quick]``; a Markdown table and a PNG plot are written
next to the JSON, by default ``runs/bench/memory.json`` (the shipped ``docs/benchmarks/memory.json``
is only rewritten when asked for by name). ``l2i bench memory --configs LABEL=CONFIG ...`` measures
experiment configs instead (any solver; per-sample cost and the largest batch in a budget), by
default into ``runs/bench/config_memory.json``: see :mod:`learn2invert.bench.config_memory`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..train.memory_check import saved_tensor_bytes
from .process_memory import release_free_heap, rss_bytes

# Defaults under runs/ (git-ignored): a trial run must not overwrite the shipped results in docs/.
DEFAULT_JSON = "runs/bench/memory.json"
DEFAULT_CONFIGS_JSON = "runs/bench/config_memory.json"
FIELDS = ("model", "memory_mode", "dims", "steps", "layers", "image_size", "batch", "peak_bytes", "saved_bytes",
          "step_seconds")


def build_problem(spec: dict):
    """Model, measurements, operator and target of one record (4x random-mask single-coil MRI, complex images)."""
    from .. import operators
    from ..solvers.irim import IRIM
    from ..solvers.rim import RIM

    torch.manual_seed(0)
    n, b, dims = spec["image_size"], spec["batch"], spec["dims"]
    shape = (b, 2, spec["depth"], n, n) if dims == 3 else (b, 2, n, n)
    mask = operators.masks.random_mask((n,), 4.0, 0.08, seed=0).reshape(1, 1, *([1] * (dims - 2)), 1, n).float()
    op = operators.SingleCoilMRI(mask.expand(b, 1, *shape[2:-1], n).contiguous())
    x = torch.randn(shape)
    y = op.A(x)
    if spec["model"] == "irim":
        model = IRIM(2, dims=dims, steps=spec["steps"], state_channels=spec["state_channels"],
                     hidden_channels=spec["hidden_channels"], downsampling=_fanned(spec["layers"]),
                     memory=spec["memory_mode"])
    elif spec["model"] == "rim":
        model = RIM(2, dims=dims, steps=spec["steps"], architecture="mri", memory=spec["memory_mode"])
    else:
        raise ValueError(f"unknown model {spec['model']!r}")
    return model, y, op, x


def _fanned(layers: int) -> tuple[int, ...]:
    """``layers`` downsampling factors rising 1 -> 4 and falling back, e.g. 5 -> (1, 2, 4, 2, 1)."""
    up = [min(4, 2 ** (i * 3 // max(1, layers // 2))) for i in range((layers + 1) // 2)]
    return tuple(up + up[: layers // 2][::-1])


def measure(spec: dict) -> dict:
    """Measure one record in this process (call it in a fresh one: see :func:`run_grid`)."""
    torch.set_num_threads(spec.get("threads", torch.get_num_threads()))
    model, y, op, x = build_problem(spec)
    cuda = spec.get("device", "cpu") == "cuda"
    if cuda:
        model, y, op, x = model.cuda(), y.cuda(), op.to(device="cuda"), x.cuda()
    params = list(model.parameters())

    def loss():
        return torch.mean((model(y, op, sigma=0.1)[-1] - x) ** 2)

    loss().backward()  # warm-up: allocates .grad and the allocator's first blocks
    saved = saved_tensor_bytes(loss, params)
    model.zero_grad(set_to_none=False)
    if cuda:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        release_free_heap()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        before = rss_bytes("VmRSS")
    start = time.perf_counter()
    loss().backward()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if cuda else rss_bytes("VmHWM")) - before
    layers = spec["layers"] if spec["model"] == "irim" else 5  # the RIM cell: 3 convs + 2 GRUs
    return {"model": spec["model"], "memory_mode": spec["memory_mode"], "dims": spec["dims"], "steps": spec["steps"],
            "layers": layers * spec["steps"], "image_size": list(x.shape[2:]), "batch": spec["batch"],
            "peak_bytes": int(peak), "saved_bytes": int(saved), "step_seconds": seconds}


# ----------------------------------------------------------------------------------- the grid

def grid(quick: bool, threads: int = 2) -> list[dict]:
    """The records to measure. Sizes fit a 2-core, 24 GB CPU: 2D 128x128 (64x64 with ``quick``),
    3D 8x64x64, batch 1, i-RIM state and hidden channels 32. In 3D the plainly back-propagated
    i-RIM is measured up to 100 layers only (deeper would not fit in memory)."""
    specs = []
    for dims in (2,) if quick else (2, 3):
        base = {"dims": dims, "batch": 1, "threads": threads, "image_size": 64 if quick or dims == 3 else 128,
                "depth": 8, "state_channels": 32, "hidden_channels": 32}
        for steps in (1, 8) if quick else (1, 4, 8):
            for mode in ("autograd", "checkpoint"):
                specs.append({**base, "model": "rim", "memory_mode": mode, "steps": steps, "layers": 5})
            for layers in (5, 25) if quick else (5, 10, 25, 50):
                for mode in ("invertible", "autograd"):
                    if dims == 3 and mode == "autograd" and steps * layers > 100:
                        continue
                    specs.append({**base, "model": "irim", "memory_mode": mode, "steps": steps, "layers": layers})
    return specs


def run_grid(specs: list[dict], show_progress: bool = True) -> list[dict]:
    """Measure each spec in a fresh ``python -m learn2invert.bench.memory --one SPEC`` subprocess."""
    from tqdm import tqdm

    records = []
    for spec in tqdm(specs, desc="memory", unit="record", disable=not show_progress):
        out = subprocess.run([sys.executable, "-m", "learn2invert.bench.memory", "--one", json.dumps(spec)],
                             capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if out.returncode != 0:
            raise RuntimeError(f"memory measurement failed for {spec}:\n{out.stderr[-2000:]}")
        records.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return records


def markdown_table(records: list[dict]) -> str:
    lines = ["| model | memory mode | dims | T | layers | image | peak (MB) | saved (MB) | step (s) |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['model']} | {r['memory_mode']} | {r['dims']}D | {r['steps']} | {r['layers']} | "
                     f"{'x'.join(map(str, r['image_size']))} | {r['peak_bytes'] / 2**20:.1f} | "
                     f"{r['saved_bytes'] / 2**20:.1f} | {r['step_seconds']:.2f} |")
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims_present = sorted({r["dims"] for r in records})
    fig, axes = plt.subplots(1, len(dims_present), figsize=(6 * len(dims_present), 4.2), squeeze=False)
    for ax, dims in zip(axes[0], dims_present):
        groups: dict[tuple, list] = {}
        for r in records:
            if r["dims"] == dims:
                groups.setdefault((r["model"], r["memory_mode"], r["steps"]), []).append(r)
        for (model, mode, steps), rs in sorted(groups.items()):
            rs = sorted(rs, key=lambda r: r["layers"])
            style = "-o" if mode in ("invertible", "checkpoint") else "--s"
            ax.plot([r["layers"] for r in rs], [r["peak_bytes"] / 2**20 for r in rs], style,
                    label=f"{model} {mode} T={steps}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("network depth (layers over all steps)")
        ax.set_ylabel("peak training memory above baseline (MB)")
        size = "x".join(map(str, next(r["image_size"] for r in records if r["dims"] == dims)))
        ax.set_title(f"{dims}D, {size}, batch 1, one training step")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="l2i bench memory", description=__doc__.splitlines()[0])
    parser.add_argument("--json", help=f"output JSON; a .md (and for the grid a .png) is written next to it (default {DEFAULT_JSON}; "
                                         f"{DEFAULT_CONFIGS_JSON} with --configs)")
    parser.add_argument("--quick", action="store_true", help="2D only, T in {1, 8}, two depths (about two minutes)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads per measurement")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one JSON spec and print the record
    parser.add_argument("--configs", nargs="+", metavar="LABEL=CONFIG[:KEY=VALUE,...]",
                        help="instead of the i-RIM grid: one training step of each config's own solver and problem at "
                             "two batch sizes, the per-sample cost and the largest batch in --budget-mb")
    parser.add_argument("--batches", type=int, nargs=2, default=(1, 4), help="the two batch sizes of --configs")
    parser.add_argument("--budget-mb", type=float, default=1024, help="memory budget of --configs (MB)")
    parser.add_argument("--check-up-to", type=int, default=64, help="check the derived largest batch by a real step up to this size")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(json.loads(args.one))))
        return 0
    if args.configs:
        return _main_configs(args)
    records = run_grid(grid(args.quick, args.threads))
    out = Path(args.json or DEFAULT_JSON)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1))
    out.with_suffix(".md").write_text(markdown_table(records) + "\n")
    plot(records, out.with_suffix(".png"))
    print(markdown_table(records))
    print(f"wrote {out}, {out.with_suffix('.md')} and {out.with_suffix('.png')}")
    return 0


def _main_configs(args) -> int:
    from . import config_memory

    rows = config_memory.run_configs(args.configs, tuple(args.batches), args.budget_mb, threads=args.threads,
                                     check_up_to=args.check_up_to)
    out = Path(args.json or DEFAULT_CONFIGS_JSON)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    out.with_suffix(".md").write_text(config_memory.markdown_table(rows) + "\n")
    print(config_memory.markdown_table(rows))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
