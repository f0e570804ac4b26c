"""Training memory of experiment configs and the largest batch within a budget: ``l2i bench memory --configs``.

For each config (optionally changed by ``LABEL:CONFIG:KEY=VALUE,...`` overrides), one training
step of its solver on its own problem (data, operator, loss on the last iterate) is measured in
a fresh subprocess at two batch sizes, exactly as :func:`learn2invert.bench.memory.measure` does
for the i-RIM grid (peak resident set above the memory held before the step; saved tensors
counted by hooks). The per-sample cost is the slope between the two batches; the largest batch
that fits the budget follows from it and is then *checked*: one more subprocess trains a step at
that batch and its measured peak is reported next to the budget (LUSER paper, Table 3, used
maximum batch sizes on 8 / 10 / 24 GB GPUs as its memory measure).

Budget semantics: the peak of one training step above the process's memory before the step
(weights, optimiser-free), i.e. what a batch costs, not the interpreter and libraries.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

from ..train.memory_check import saved_tensor_bytes
from .process_memory import release_free_heap, rss_bytes


def parse_item(item: str) -> dict:
    """``LABEL=CONFIG[:KEY=VALUE,KEY=VALUE]`` -> ``{"label", "config", "overrides"}``."""
    label, sep, rest = item.partition("=")
    if not sep:
        raise ValueError(f"give configs as LABEL=CONFIG[:KEY=VALUE,...], got {item!r}")
    path, _, extra = rest.partition(":")
    return {"label": label, "config": path, "overrides": [o for o in extra.split(",") if o]}


def measure_config(spec: dict) -> dict:
    """One training step of ``spec['config']`` at ``spec['batch']`` in this process (see the module docstring)."""
    from ..data.items import item_shape, split_item, stack_items
    from ..train.config import load_config
    from ..train.datasets import build_dataset
    from ..train.experiment import build_solver
    from ..operators.generator import Measurement

    torch.set_num_threads(spec.get("threads", 1))
    torch.manual_seed(0)
    config = load_config(spec["config"], spec["overrides"])
    dataset = build_dataset(config, "val")
    shape = item_shape(dataset[0])
    batch = spec["batch"]
    # kspace: the items' own coil k-space (data.params.own_coils), undersampled by the measurement; else None
    x, kspace = split_item(stack_items([dataset[i % len(dataset)] for i in range(batch)]))
    measurement = Measurement(config, shape)
    y, op, sigma = measurement(x, torch.Generator().manual_seed(0), kspace=kspace)
    model = build_solver(config, shape).train()
    params = [p for p in model.parameters() if p.requires_grad]

    def loss():
        return torch.mean((model(y, op, sigma=sigma)[-1] - x) ** 2)

    loss().backward()  # warm-up
    saved = saved_tensor_bytes(loss, params)
    model.zero_grad(set_to_none=False)
    release_free_heap()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = rss_bytes("VmRSS")
    start = time.perf_counter()
    loss().backward()
    seconds = time.perf_counter() - start
    peak = rss_bytes("VmHWM") - before
    return {"label": spec["label"], "config": spec["config"], "overrides": spec["overrides"], "batch": batch,
            "image_shape": list(shape), "parameters": sum(p.numel() for p in model.parameters()),
            "peak_bytes": int(peak), "saved_bytes": int(saved), "step_seconds": seconds}


def _run(spec: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "learn2invert.bench.config_memory", json.dumps(spec)],
                         capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode != 0:
        raise RuntimeError(f"memory measurement failed for {spec}:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_configs(items: list[str], batches: tuple[int, int] = (1, 4), budget_mb: float = 1024, threads: int = 1,
                check_up_to: int = 64, show_progress: bool = True) -> list[dict]:
    """Measure every item at both batches, derive the per-sample cost and the largest batch in ``budget_mb``.

    The derived batch is checked by a real step when it is at most ``check_up_to`` (larger
    batches of the slow equilibrium models would take minutes on a CPU).
    """
    from tqdm import tqdm

    from ..train.config import load_config

    for item in items:  # a missing file or a wrong key: one line naming it, before any subprocess
        spec = parse_item(item)
        load_config(spec["config"], spec["overrides"])
    rows = []
    for item in tqdm(items, desc="memory", unit="config", disable=not show_progress):
        spec = {**parse_item(item), "threads": threads}
        small, large = (_run({**spec, "batch": b}) for b in batches)
        per_sample = (large["peak_bytes"] - small["peak_bytes"]) / (batches[1] - batches[0])
        fixed = small["peak_bytes"] - batches[0] * per_sample
        # A peak that does not grow with the batch (below the resident-set noise of ~1 MB) gives no
        # per-sample cost to extrapolate from: no largest batch is claimed then.
        max_batch = int((budget_mb * 2**20 - fixed) // per_sample) if per_sample > 2**20 / 4 else None
        row = {"label": spec["label"], "config": spec["config"], "overrides": spec["overrides"],
               "parameters": small["parameters"], "image_shape": small["image_shape"],
               "peak_bytes": {str(batches[0]): small["peak_bytes"], str(batches[1]): large["peak_bytes"]},
               "saved_bytes": {str(batches[0]): small["saved_bytes"], str(batches[1]): large["saved_bytes"]},
               "step_seconds": {str(batches[0]): small["step_seconds"], str(batches[1]): large["step_seconds"]},
               "per_sample_bytes": per_sample, "budget_mb": budget_mb,
               "max_batch": None if max_batch is None else max(max_batch, 0)}
        if max_batch is not None and 1 <= max_batch <= check_up_to:
            checked = _run({**spec, "batch": max_batch})
            row["checked_peak_bytes"] = checked["peak_bytes"]
        rows.append(row)
    return rows


def max_batch_text(row: dict) -> str:
    if row["max_batch"] is None:
        return "n/a (peak did not grow with the batch)"
    return f"{row['max_batch']} (of {row['budget_mb']:.0f} MB)"


def markdown_table(rows: list[dict]) -> str:
    b = list(rows[0]["peak_bytes"]) if rows else ["1", "4"]
    lines = [f"| model | parameters | image | peak b={b[0]} (MB) | peak b={b[1]} (MB) | per sample (MB) | "
             f"saved b={b[1]} (MB) | step b={b[1]} (s) | max batch in budget | measured peak there (MB) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        checked = f"{r['checked_peak_bytes'] / 2**20:.0f}" if "checked_peak_bytes" in r else "-"
        lines.append(f"| {r['label']} | {r['parameters']:,} | {'x'.join(map(str, r['image_shape']))} | "
                     f"{r['peak_bytes'][b[0]] / 2**20:.1f} | {r['peak_bytes'][b[1]] / 2**20:.1f} | "
                     f"{r['per_sample_bytes'] / 2**20:.1f} | {r['saved_bytes'][b[1]] / 2**20:.1f} | "
                     f"{r['step_seconds'][b[1]]:.2f} | {max_batch_text(r)} | {checked} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(measure_config(json.loads(sys.argv[1]))))
