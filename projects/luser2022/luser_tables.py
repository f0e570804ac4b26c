"""The LUSER paper's Tables 2 and 3 at laptop scale: ``python projects/luser2022/luser_tables.py``.

Table 2 (quality): the runs of ``projects/luser2022/run.py`` (``runs/deq_{task}_{model}``, with
``_aux`` for the auxiliary loss on every fold) are scored per task on the same held-out test
data with :func:`learn2invert.bench.compare.compare` (which adds the adjoint / zero-filled
input, FBP for CT and TV). Table 3 (memory): parameter counts, training memory per sample and
the largest batch within a budget, read from ``OUT/deq_memory.json`` as written by
``l2i bench memory --configs`` (``run.py`` runs it first).

Writes ``OUT/deq_{task}.json|.md|.png`` and ``OUT/luser_tables.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from learn2invert.bench.compare import compare, write
from learn2invert.bench.config_memory import max_batch_text

MODELS = ("lu_dncnn", "lu_dncnn_aux", "deq4ip", "luser_sw", "luser_sw_aux", "luser_dw", "luser_dw_aux")
LABELS = {"lu_dncnn": "LU-DnCNN", "deq4ip": "DEQ4IP", "luser_sw": "LUSER-SW", "luser_dw": "LUSER-DW"}
TASKS = {"deblur": "deblurring (RGB photographs)", "ct": "sparse-view CT (ellipses)", "mri": "4x MRI (brain)",
         "mri8": "8x MRI (brain)"}
# Paper Table 2, PSNR / SSIM (CelebA, LoDoPaB-CT, fastMRI knee), final loss and aux loss.
PAPER = {
    "deblur": {"lu_dncnn": (29.93, 0.862), "lu_dncnn_aux": (30.39, 0.871), "deq4ip": (31.57, 0.895),
               "luser_sw": (30.30, 0.869), "luser_sw_aux": (30.65, 0.878), "luser_dw": (31.40, 0.891), "luser_dw_aux": (31.15, 0.888)},
    "ct": {"lu_dncnn": (30.59, 0.844), "lu_dncnn_aux": (31.59, 0.859), "deq4ip": (31.79, 0.868),
           "luser_sw": (28.82, 0.801), "luser_sw_aux": (28.04, 0.797), "luser_dw": (31.83, 0.860), "luser_dw_aux": (31.66, 0.859)},
    "mri": {"lu_dncnn": (29.01, 0.668), "lu_dncnn_aux": (29.02, 0.671), "deq4ip": (29.01, 0.678),
            "luser_sw": (28.82, 0.662), "luser_sw_aux": (29.18, 0.685), "luser_dw": (29.86, 0.740), "luser_dw_aux": (29.37, 0.713)},
    "mri8": {"lu_dncnn": (27.50, 0.576), "lu_dncnn_aux": (27.65, 0.572), "deq4ip": (27.51, 0.570),
             "luser_sw": (27.42, 0.562), "luser_sw_aux": (27.42, 0.560), "luser_dw": (28.06, 0.630), "luser_dw_aux": (27.55, 0.596)},
}
# Paper Table 3: parameters and the largest batch on an 8 GB GPU.
PAPER_MEMORY = {"deblur": {"lu_dncnn": (558_580, 1), "deq4ip": (558_580, 16), "luser_sw": (96_503, 10), "luser_dw": (770_073, 10)},
                "ct": {"lu_dncnn": (556_033, None), "deq4ip": (556_033, 4), "luser_sw": (93_954, 2), "luser_dw": (751_625, 2)},
                "mri": {"lu_dncnn": (557_185, None), "deq4ip": (557_185, 4), "luser_sw": (95_107, 4), "luser_dw": (760_849, 4)}}


def label(model: str) -> str:
    base = model.removesuffix("_aux")
    return LABELS[base] + (" (aux loss)" if model != base else "")


def run_quality(runs_dir: Path, out: Path, tasks: list[str], samples: int | None = None,
                show_progress: bool = True, reuse: bool = False) -> dict:
    """Score each task's runs; returns ``{task: {method: {"psnr", "ssim", "nmse"}}}``.

    ``reuse``: take a task's scores from an existing ``OUT/deq_{task}.json`` that covers all its
    runs instead of scoring again (so tasks can be scored in parallel processes, then gathered).
    """
    results = {}
    for task in tasks:
        runs = {m: runs_dir / f"deq_{task}_{m}" for m in MODELS if (runs_dir / f"deq_{task}_{m}" / "model.safetensors").is_file()}
        if not runs:
            continue
        previous = out / f"deq_{task}.json"
        methods = json.loads(previous.read_text())["methods"] if reuse and previous.is_file() else {}
        if not set(runs) <= set(methods):
            result = compare(runs, "test", tv=True, samples=samples, show_progress=show_progress)
            write(result, out / f"deq_{task}")
            methods = result["methods"]
        results[task] = {m: {k: v["mean"] for k, v in s.items()} for m, s in methods.items()}
        for m in runs:  # training steps reached in the wall-clock budget
            history = json.loads((runs[m] / "history.json").read_text())
            results[task][m]["train_steps"] = history[-1]["global_step"]
    return results


def markdown(results: dict, memory: list[dict] | None) -> str:
    lines = ["### Table 2: reconstruction quality", "",
             "PSNR (dB) / SSIM on held-out test data, ours | the paper's (its datasets), and training steps reached.", "",
             "| task | method | ours | paper | steps |", "|---|---|---:|---:|---:|"]
    for task, scores in results.items():
        for m, s in scores.items():
            paper = PAPER.get(task, {}).get(m)
            name = label(m) if m.removesuffix("_aux") in LABELS else m
            lines.append(f"| {TASKS.get(task, task)} | {name} | {s['psnr']:.2f} / {s['ssim']:.3f} | "
                         f"{f'{paper[0]:.2f} / {paper[1]:.3f}' if paper else '-'} | {s.get('train_steps', '-')} |")
    if memory:
        lines += ["", "### Table 3: training memory", "",
                  "One training step (forward + backward, loss on the last fold) in a fresh process on the CPU; "
                  "peak resident memory above the process before the step. Largest batch within the budget derived "
                  "from the per-sample cost and checked by a real step where small enough. Paper: parameters and "
                  "the largest batch on an 8 GB GPU.", "",
                  "| task / model | parameters | paper parameters | per sample (MB) | largest batch in budget | "
                  "measured peak there (MB) | paper batch (8 GB) |", "|---|---:|---:|---:|---:|---:|---:|"]
        for r in memory:
            task, _, model = r["label"].partition("/")
            paper = PAPER_MEMORY.get(task, {}).get(model, (None, None))
            checked = f"{r['checked_peak_bytes'] / 2**20:.0f}" if "checked_peak_bytes" in r else "-"
            lines.append(f"| {r['label']} | {r['parameters']:,} | {f'{paper[0]:,}' if paper[0] else '-'} | "
                         f"{r['per_sample_bytes'] / 2**20:.1f} | {max_batch_text(r)} | "
                         f"{checked} | {paper[1] if paper[1] else '-'} |")
        lines += ["", ratio_summary(memory)]
    return "\n".join(lines)


def ratio_summary(memory: list[dict]) -> str:
    """Per task, LU-DnCNN's per-sample training memory divided by each equilibrium model's."""
    by_task: dict[str, dict[str, float]] = {}
    for r in memory:
        task, _, model = r["label"].partition("/")
        by_task.setdefault(task, {})[model] = r["per_sample_bytes"]
    parts = []
    for task, models in by_task.items():
        if "lu_dncnn" in models:
            parts.append(f"{task}: " + ", ".join(f"{LABELS.get(m, m)} {models['lu_dncnn'] / v:.1f}x"
                                                 for m, v in models.items() if m != "lu_dncnn"))
    return "Memory saving against LU-DnCNN (per-sample training memory ratio): " + "; ".join(parts) + "."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python projects/luser2022/luser_tables.py", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", help="folder holding runs/deq_{task}_{model}")
    parser.add_argument("--out", default="runs/bench", help="output folder (the README's tables were written with --out projects/luser2022/results)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--samples", type=int, help="limit the number of test samples")
    parser.add_argument("--reuse", action="store_true", help="reuse OUT/deq_{task}.json where it covers the task's runs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = run_quality(Path(args.runs), out, args.tasks, args.samples, reuse=args.reuse)
    if not results:
        parser.error(f"no LUSER runs found in {args.runs} (run projects/luser2022/run.py first)")
    memory_path = out / "deq_memory.json"
    memory = json.loads(memory_path.read_text()) if memory_path.is_file() else None
    (out / "luser_tables.json").write_text(json.dumps({"quality": results, "memory": memory}, indent=1))
    text = markdown(results, memory)
    (out / "luser_tables.md").write_text(text + "\n")
    print(text)
    print(f"wrote {out / 'luser_tables.md'} and one .json/.md/.png per task")
    return 0


if __name__ == "__main__":
    sys.exit(main())
