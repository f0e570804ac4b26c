"""The flow-unfolding paper's Tables I-IV at laptop scale: ``python projects/flow_unfolding2021/flow_tables.py``.

Reads the runs of ``projects/flow_unfolding2021/run.py`` (``runs/flow_{task}_{method}``) and scores every
method of a task on the same held-out measurements with :func:`learn2invert.bench.compare.compare`,
in three settings:

- **in distribution** (Tables I and II): the test photographs (never cropped for training), the
  training operator;
- **out-of-distribution measurements** (Table III): noise 0.25 instead of 0.2, an 8x8 hole
  instead of 10x10, blur sigma 4 instead of 2.5 (the paper's 0.25, 16x16 of 64, sigma_b 8);
- **out-of-distribution images** (Table IV): the ellipse phantoms instead of photographs (the
  paper: Anime faces instead of CelebA-HQ), the training operator.

TV (weight chosen on each setting's validation split) and the adjoint input are scored too.
Writes ``OUT/flow_{task}_{setting}.json|.md|.png`` and ``OUT/flow_tables.md`` (the four tables,
ours next to the paper's).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from learn2invert.bench.compare import compare, write

METHODS = ("resnet", "resnet_pre", "unet", "unet_pre", "pnp", "glow")
LABELS = {"resnet": "ResNet prox", "resnet_pre": "pre-trained ResNet prox", "unet": "U-Net prox",
          "unet_pre": "pre-trained U-Net prox", "pnp": "GLOW plug-and-play", "glow": "GLOW prox (proposed)",
          "tv": "TV", "adjoint": "input (A^T y)"}
TASKS = ("denoise", "inpaint", "deblur")
SETTINGS = {
    "in": {},
    "ood_measurements": {"denoise": ["operator.noise_sigma=0.25"], "inpaint": ["operator.params={hole: 8}"],
                         "deblur": ["operator.params={kernel_size: 17, sigma: 4.0}"]},
    "ood_images": {task: ["data.name=ellipses", "data.params={}"] for task in TASKS},
}
# Mean test PSNR (dB) from the paper (CelebA-HQ 64x64 RGB; Anime faces for OOD images).
PAPER = {
    "in": {"resnet": (27.054, 34.010, 35.554), "resnet_pre": (None, 33.216, 35.703), "unet": (28.180, 35.157, 38.662),
           "unet_pre": (None, 35.337, 38.046), "pnp": (8.112, 18.960, 23.141), "glow": (28.236, 35.927, 40.549)},
    "ood_measurements": {"resnet": (25.489, 34.644, 35.358), "unet": (25.770, 35.917, 38.034), "glow": (26.633, 36.634, 39.461)},
    "ood_images": {"resnet": (21.746, 23.705, 25.007), "unet": (22.587, 24.015, 26.224), "glow": (22.102, 23.472, 27.419)},
}
TITLES = {"in": "Tables I and II: in distribution (test photographs)",
          "ood_measurements": "Table III: out-of-distribution measurements (noise 0.25, 8x8 hole, blur sigma 4)",
          "ood_images": "Table IV: out-of-distribution images (ellipse phantoms)"}


def run_tables(runs_dir: Path, out: Path, samples: int | None = None, tv_iterations: int = 200,
               show_progress: bool = True) -> dict:
    """Score every task and setting; returns ``{setting: {task: {method: {"psnr", "ssim"}}}}``."""
    results: dict = {}
    for setting, overrides in SETTINGS.items():
        for task in TASKS:
            runs = {m: runs_dir / f"flow_{task}_{m}" for m in METHODS if (runs_dir / f"flow_{task}_{m}" / "model.safetensors").is_file()}
            if not runs:
                continue
            result = compare(runs, "test", tv=True, samples=samples, show_progress=show_progress,
                             tv_iterations=tv_iterations, overrides=overrides.get(task, []) if overrides else [])
            write(result, out / f"flow_{task}_{setting}")
            results.setdefault(setting, {})[task] = {
                m: {k: result["methods"][m][k]["mean"] for k in ("psnr", "ssim")} for m in result["methods"]}
    return results


def markdown(results: dict) -> str:
    lines = []
    for setting, title in TITLES.items():
        if setting not in results:
            continue
        lines += [f"### {title}", "", "PSNR (dB) / SSIM, ours (grey 32x32) | paper (PSNR, RGB 64x64)", "",
                  "| method | " + " | ".join(TASKS) + " | paper: " + " | paper: ".join(TASKS) + " |",
                  "|---|" + "---:|" * (2 * len(TASKS))]
        methods = ["adjoint", "tv", *METHODS]
        for m in methods:
            row = []
            for task in TASKS:
                scores = results[setting].get(task, {})
                key = m if m != "adjoint" else next((k for k in scores if k in ("adjoint", "zero-filled")), m)
                row.append(f"{scores[key]['psnr']:.2f} / {scores[key]['ssim']:.3f}" if key in scores else "-")
            paper = PAPER.get(setting, {}).get(m, (None,) * len(TASKS))
            if all(v == "-" for v in row):
                continue
            lines.append(f"| {LABELS[m]} | " + " | ".join(row) + " | "
                         + " | ".join(f"{p:.2f}" if p is not None else "-" for p in paper) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python projects/flow_unfolding2021/flow_tables.py", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", help="folder holding runs/flow_{task}_{method}")
    parser.add_argument("--out", default="runs/bench", help="output folder (the README's tables were written with --out projects/flow_unfolding2021/results)")
    parser.add_argument("--samples", type=int, help="limit the number of test samples")
    parser.add_argument("--tv-iterations", type=int, default=200)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = run_tables(Path(args.runs), out, args.samples, args.tv_iterations)
    if not results:
        parser.error(f"no flow runs found in {args.runs} (run projects/flow_unfolding2021/run.py first)")
    (out / "flow_tables.json").write_text(json.dumps(results, indent=1))
    text = markdown(results)
    (out / "flow_tables.md").write_text(text + "\n")
    print(text)
    print(f"wrote {out / 'flow_tables.md'}, {out / 'flow_tables.json'} and one .json/.md/.png per task and setting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
