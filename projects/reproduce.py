"""Reproduce every paper table of docs/BENCHMARKS.md with one command: ``l2i bench quality``.

Each table is a list of steps run from the repository root: a training (skipped when its run
folder already holds a model, so an interrupted reproduction continues where it stopped) or a
command that writes JSON + Markdown (+ figures) under ``docs/benchmarks/``. These are the exact
commands the benchmark pages quote; nothing here computes a number itself.

    l2i bench quality --list                 # the tables and their steps
    l2i bench quality --only luser flows     # some tables
    l2i bench quality                        # all of them (several hours on a 2-core CPU)
    l2i bench quality --dry-run              # print the commands without running them

Trainings use one thread each (``OMP_NUM_THREADS=1``), as the measured tables did.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

L2I = "l2i"


def _train(config: str, out: str, *sets: str) -> tuple[str, str]:
    return out, " ".join([L2I, "train", config, "--out", out, *(f"--set {shlex.quote(s)}" for s in sets)])


def _cmd(command: str) -> tuple[None, str]:
    return None, command


RIM_DENOISE = [(f"runs/rim_dn_{s}", f"configs/rim_denoise_{s}.yaml") for s in ("sigma15", "sigma25", "sigma50", "rgb_sigma25")]

TABLES: dict[str, dict] = {
    "rim_figure2": {
        "paper": "RIM (2017) Figure 2: random projections, RIM vs FFN vs GDN",
        "steps": [_cmd("bash docs/benchmarks/rim_figure2.sh"),
                  _cmd("bash docs/benchmarks/rim_figure2.sh configs/rim_random_projections_gaussian_p4.yaml runs/fig2_gaussian_p4"),
                  _cmd("python -m learn2invert.bench.rim_figure2 --runs runs/fig2_gaussian_p2_rim runs/fig2_gaussian_p2_ffn "
                       "runs/fig2_gaussian_p2_gdn runs/fig2_gaussian_p4_rim runs/fig2_gaussian_p4_ffn runs/fig2_gaussian_p4_gdn "
                       "--out docs/benchmarks/rim_figure2 --tikhonov")],
    },
    "rim_denoising": {
        "paper": "RIM (2017) Tables 1-2: denoising",
        "steps": [_train(cfg, out, "train.time_limit_minutes=4", "train.epochs=200") for out, cfg in RIM_DENOISE]
        + [_cmd('python -m learn2invert.bench.rim_denoising --setting "grey, sigma=15/255=runs/rim_dn_sigma15" '
                '--setting "grey, sigma=25/255=runs/rim_dn_sigma25" --setting "grey, sigma=50/255=runs/rim_dn_sigma50" '
                '--setting "grey, sigma=25/255, 8-bit quantised (sigma-25 model, not retrained)=runs/rim_dn_sigma25:quantize" '
                '--setting "RGB, sigma=25/255=runs/rim_dn_rgb_sigma25" --transfer runs/fig2_gaussian_p2_rim '
                '--out docs/benchmarks/rim_denoising --notes docs/benchmarks/rim_denoising.notes.md')],
    },
    "rim_superres": {
        "paper": "RIM (2017) super-resolution table: x2, x3, x4 against bicubic",
        "steps": [_train(f"configs/rim_superres_x{f}.yaml", f"runs/rim_sr_x{f}") for f in (2, 3, 4)]
        + [_cmd("l2i bench superres runs/rim_sr_x2 runs/rim_sr_x3 runs/rim_sr_x4 --out docs/benchmarks/rim_superres")],
    },
    "irim_memory": {
        "paper": "i-RIM (2019) memory table: training memory against depth",
        "steps": [_cmd("l2i bench memory --threads 1 --json docs/benchmarks/memory.json"),
                  _cmd("l2i bench speed --json docs/benchmarks/speed.json --repeats 5")],
    },
    "irim_mri": {
        "paper": "i-RIM (2019) single-coil MRI table (4x and 8x; U-Net, RIM, i-RIM, ADMM-Net, TV)",
        "steps": [_cmd("MINUTES=7 SETTINGS=4:0.08 bash scripts/mri_experiments.sh"),
                  _cmd("MINUTES=5 SETTINGS=8:0.04 SKIP_3D=1 bash scripts/mri_experiments.sh"),
                  _train("configs/mri_admm_4x.yaml", "runs/mri_admm_4x", "train.epochs=1000", "train.time_limit_minutes=7"),
                  _cmd("l2i bench compare unet=runs/mri_unet_4x rim=runs/mri_rim_4x irim=runs/mri_irim_4x "
                       "admm=runs/mri_admm_4x --out docs/benchmarks/mri_4x_admm --tv-grid 0.0003 0.001 0.003 0.01 0.03")],
    },
    "pretrained_mri": {
        "paper": "The shipped MRI models (i-RIM, RIM over 2x-8x; fixed step counts): test slices 4x/8x, real MR scan",
        "steps": [_cmd("bash scripts/pretrained_mri.sh")],
    },
    "mixed_mri": {
        "paper": "Shipped MRI models for real scans: photographs in the training mix (ablation, mri_*_mixed)",
        "steps": [_cmd("bash scripts/mri_mixed.sh")],
    },
    "flows": {
        "paper": "Flow-unfolding (2021) Tables I-IV: GLOW prox vs ResNet / U-Net prox, plug-and-play, out of distribution",
        "steps": [_cmd("bash scripts/flow_experiments.sh"), _cmd("l2i bench flows --out docs/benchmarks")],
    },
    "luser": {
        "paper": "LUSER (2022) Tables 2-3: LU-DnCNN, DEQ4IP, LUSER-SW/DW quality and training memory",
        "steps": [_cmd("bash scripts/deq_experiments.sh")],
    },
}


def _env() -> dict:
    # The scripts call .venv/bin/l2i by default; point them (and bare `l2i`) at this interpreter's.
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "L2I": str(Path(bin_dir) / "l2i"), "PY": sys.executable}


def run(names: list[str], dry_run: bool = False) -> list[dict]:
    """Run the steps of the named tables in order; returns one record per step (command, status, seconds)."""
    records = []
    for name in names:
        table = TABLES[name]
        print(f"== {name}: {table['paper']}", flush=True)
        for out, command in table["steps"]:
            if out is not None and (Path(out) / "model.safetensors").is_file():
                print(f"   skip (trained already): {command}", flush=True)
                records.append({"table": name, "command": command, "status": "skipped"})
                continue
            print(f"   $ {command}", flush=True)
            if dry_run:
                continue
            start = time.perf_counter()
            code = subprocess.run(command.replace("python -m", f"{shlex.quote(sys.executable)} -m"), shell=True,
                                  env=_env()).returncode
            records.append({"table": name, "command": command, "status": code, "seconds": time.perf_counter() - start})
            if code != 0:
                raise SystemExit(f"step failed with exit code {code}: {command}")
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="l2i bench quality", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(TABLES), help="tables to reproduce (default: all)")
    parser.add_argument("--list", action="store_true", help="list the tables and their steps")
    parser.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    args = parser.parse_args(argv)
    names = args.only or list(TABLES)
    if args.list:
        for name in names:
            print(f"{name}: {TABLES[name]['paper']}")
            for _, command in TABLES[name]["steps"]:
                print(f"    {command}")
        return 0
    records = run(names, args.dry_run)
    if not args.dry_run:
        total = sum(r.get("seconds", 0.0) for r in records)
        print(f"done: {len(records)} steps, {total / 60:.1f} min; tables under docs/benchmarks/, gathered in docs/BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
