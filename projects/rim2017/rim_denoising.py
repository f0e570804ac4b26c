"""RIM paper denoising tables (Tables 1 and 2) at laptop scale: noisy input vs TV vs RIM-denoise vs RIM-3task.

Reads run folders written by ``l2i train`` (RIM-denoise models, one per noise setting) and, for the
transfer column, a RIM trained on random projections (the paper's RIM-3task idea), and scores all of
them on the *same* held-out test patches with the *same* noise::

    python projects/rim2017/rim_denoising.py \\
        --setting "grey, sigma=15/255=runs/rim_dn_sigma15" \\
        --setting "grey, sigma=25/255=runs/rim_dn_sigma25" \\
        --setting "grey, sigma=50/255=runs/rim_dn_sigma50" \\
        --setting "grey, sigma=25/255, 8-bit quantised=runs/rim_dn_sigma25:quantize" \\
        --setting "RGB, sigma=25/255=runs/rim_dn_rgb_sigma25" \\
        --transfer runs/fig2_gaussian_p2_rim --out projects/rim2017/results/rim_denoising

A setting is ``LABEL=RUN_DIR[:quantize]``: the test patches, noise level and operator come from the
run's ``config.yaml``; ``:quantize`` evaluates the model on 8-bit quantised noisy input
(``operator.quantize: true`` at test time only). For every setting the report has

- the noisy input ``y`` (= ``A^T y`` for denoising);
- TV denoising (:func:`learn2invert.solvers.tv.tv_reconstruct`) with its weight chosen by
  :func:`~learn2invert.solvers.tv.choose_tv_weight` on *validation* patches (crops of the training
  photographs with validation noise) of the same setting, never on the test patches;
- the RIM-denoise run, scored at every iterate up to ``--factor`` x T (T = its training horizon);
- with ``--transfer`` and a grey setting: the random-projection RIM applied unchanged to the
  denoising operator (``A = I``), up to ``--factor`` x its own T.

Measurements are simulated exactly as ``l2i eval`` does (fixed evaluation generator, batch size
16, patches in order), so the noisy-input PSNR equals the ``adjoint`` entry of ``l2i eval``.
Writes STEM.json, STEM.md, STEM.png (one example patch per setting: noisy / TV / RIM / [RIM-3task] /
truth) and STEM_curves.png (PSNR per iterate).
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader

from learn2invert.solvers.tv import choose_tv_weight, tv_reconstruct
from learn2invert.train.datasets import build_dataset
from learn2invert.operators.generator import Measurement
from learn2invert.inference import load_solver
from learn2invert.train.validate import EVAL_SEED, score_batch, score_dataset
from rim_figure2 import _fmt, _param_count

BATCH = 16  # as l2i eval: the noise of a patch depends on the batching
TV_GRID = (0.015, 0.02, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13, 0.17, 0.22, 0.3)
METRICS = ("psnr", "ssim")


def _sigma_text(sigma) -> str:
    if isinstance(sigma, list):
        return f"U[{sigma[0] * 255:.0f}, {sigma[1] * 255:.0f}]/255"
    return f"{sigma * 255:.4g}/255"


def _measure(dataset, measurement, batch_size: int = BATCH):
    """[(y, operator, sigma, x)] exactly as score_dataset draws them (same generator, same order)."""
    generator = torch.Generator().manual_seed(EVAL_SEED)
    return [(*measurement(x, generator), x) for x in DataLoader(dataset, batch_size=batch_size, shuffle=False)]


def _stats(values: torch.Tensor) -> dict:
    return {"mean": float(values.mean()), "std": float(values.std(unbiased=False))}


def score_rim(solver, dataset, measurement, steps: int) -> dict:
    """Per-iterate mean PSNR / SSIM (lists of length ``steps``) and the per-patch PSNR of every iterate."""
    scores = score_dataset(solver, dataset, measurement, torch.device("cpu"), batch_size=BATCH, steps=steps,
                           every_iterate=True, data_range=1.0)
    it = scores["iterates"]
    return {
        "psnr_per_iterate": it["psnr"].mean(dim=1).tolist(),
        "ssim_per_iterate": it["ssim"].mean(dim=1).tolist(),
        "psnr_std_per_iterate": it["psnr"].std(dim=1, unbiased=False).tolist(),
        "_per_patch_psnr": it["psnr"],
        "noisy": {k: _stats(scores["adjoint"][k]) for k in METRICS},
    }


def tv_baseline(config: dict, val_samples: int, test_batches, iterations: int = 200) -> dict:
    """TV weight chosen on validation patches of the setting, then scored on the test batches."""
    val_config = copy.deepcopy(config)
    val_config["data"]["val_length"] = val_samples
    val_set = build_dataset(val_config, "val")
    measurement = Measurement(val_config, tuple(val_set[0].shape))
    val = [(y, op, x) for y, op, _, x in _measure(val_set, measurement, batch_size=64)]
    start = time.perf_counter()
    lam, val_scores = choose_tv_weight(val, grid=TV_GRID, iterations=100, data_range=1.0)
    choose_s = time.perf_counter() - start
    start = time.perf_counter()
    per = {k: [] for k in METRICS}
    estimates = []
    with torch.no_grad():
        for y, op, _, x in test_batches:
            estimate = tv_reconstruct(op, y, lam, iterations=iterations, tolerance=1e-6)
            estimates.append(estimate)
            s = score_batch(estimate, x, 1.0)
            for k in METRICS:
                per[k].append(s[k])
    per = {k: torch.cat(v) for k, v in per.items()}
    if lam in (TV_GRID[0], TV_GRID[-1]):
        print(f"warning: TV weight {lam} is at the edge of the grid")
    return {"lam": lam, "val_samples": val_samples, "val_psnr": {f"{k:g}": v for k, v in val_scores.items()},
            "iterations": iterations, "choose_s": choose_s, "test_s": time.perf_counter() - start,
            **{k: _stats(v) for k, v in per.items()}, "_per_patch_psnr": per["psnr"],
            "_estimates": torch.cat(estimates)}


def _train_info(run_dir: Path, solver) -> dict:
    history = json.loads((run_dir / "history.json").read_text())
    wall = json.loads((run_dir / "wall.json").read_text()) if (run_dir / "wall.json").is_file() else {}
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    bs = config["train"]["batch_size"]
    return {
        "epochs": len(history),
        "patches_seen": len(history) * (config["data"]["train_length"] // bs) * bs,
        "optimizer_steps": history[-1]["global_step"] if history else 0,
        "loop_s": sum(h["seconds"] for h in history),
        "wall_s": wall.get("train_wall_s"),
        "command": wall.get("train_command"),
        "final_val_psnr": history[-1].get("val_psnr") if history else None,
        "val_psnr_per_epoch": [h.get("val_psnr") for h in history],
        "eps_learned": float(solver.eps.detach()) if hasattr(solver, "eps") else None,
        "parameters": _param_count(run_dir),
        "solver_params": config["solver"]["params"],
    }


def _model_block(result: dict, T: int) -> dict:
    p, s = result["psnr_per_iterate"], result["ssim_per_iterate"]
    best = max(range(len(p)), key=lambda i: p[i])
    return {"T": T, "steps_evaluated": len(p), "psnr_T": p[T - 1], "ssim_T": s[T - 1], "psnr_last": p[-1],
            "ssim_last": s[-1], "best": {"step": best + 1, "psnr": p[best]},
            "psnr_per_iterate": p, "ssim_per_iterate": s, "psnr_std_per_iterate": result["psnr_std_per_iterate"]}


def run_setting(label: str, run_dir: Path, quantize: bool, transfer, factor: int, tv_val_samples: int,
                samples: int | None = None) -> dict:
    solver, config, _, image_shape = load_solver(run_dir)
    if samples is not None:
        config["data"]["val_length"] = samples
    if quantize:
        config["operator"]["quantize"] = True
    dataset = build_dataset(config, "test")
    measurement = Measurement(config, image_shape)
    T = int(config["solver"]["params"]["steps"])
    start = time.perf_counter()
    rim = score_rim(solver, dataset, measurement, factor * T)
    rim_s = time.perf_counter() - start
    batches = _measure(dataset, measurement)
    tv = tv_baseline(config, tv_val_samples, batches)
    out = {
        "label": label, "run_dir": str(run_dir), "quantize_at_test": quantize,
        "operator": config["operator"]["name"], "noise_sigma": config["operator"]["noise_sigma"],
        "grey": config["data"]["grey"], "samples": len(dataset), "split": "test",
        "noisy": rim["noisy"], "tv": {k: v for k, v in tv.items() if not k.startswith("_")},
        "rim": {**_model_block(rim, T), "eval_s": rim_s, "train": _train_info(run_dir, solver)},
    }
    # Paired comparison on the same patches: share of patches where the RIM (at T) beats TV.
    out["rim"]["beats_tv_fraction_at_T"] = float((rim["_per_patch_psnr"][T - 1] > tv["_per_patch_psnr"]).float().mean())
    # Example patch: the test patch with the most structure among the first 64 (same index everywhere).
    xs = torch.cat([b[3] for b in batches])
    index = int(xs[:64].flatten(1).std(dim=1).argmax())
    with torch.no_grad():
        b, i = divmod(index, BATCH)
        y, op, sigma, x = batches[b]
        examples = {"noisy": y[i], "TV": tv["_estimates"][index],
                    f"RIM-denoise (t={T})": solver(y, op, sigma=sigma, steps=T)[-1][i], "truth": x[i]}
    if transfer is not None and config["data"]["grey"]:
        t_solver, t_config, _, _ = load_solver(transfer)
        tT = int(t_config["solver"]["params"]["steps"])
        start = time.perf_counter()
        tr = score_rim(t_solver, dataset, measurement, factor * tT)
        assert abs(tr["noisy"]["psnr"]["mean"] - rim["noisy"]["psnr"]["mean"]) < 1e-6, "transfer saw other noise"
        out["transfer"] = {**_model_block(tr, tT), "eval_s": time.perf_counter() - start, "run_dir": str(transfer),
                           "operator_trained_on": t_config["operator"], "solver_params": t_config["solver"]["params"],
                           "eps_learned": float(t_solver.eps.detach())}
        with torch.no_grad():
            est = t_solver(y, op, sigma=sigma, steps=tT)[-1][i]
        examples = {**{k: v for k, v in examples.items() if k != "truth"}, f"RIM-3task (t={tT})": est, "truth": x[i]}
    out["example"] = {"index": index, "psnr": {k: float(score_batch(v[None], x[i][None], 1.0)["psnr"])
                                               for k, v in examples.items() if k != "truth"}}
    out["_examples"] = examples
    return out


@torch.no_grad()
def _redo_example(r: dict, factor: int) -> dict:
    """The example patch of a setting stored in STEM.json, recomputed (same index, noise, TV weight)."""
    solver, config, _, image_shape = load_solver(r["run_dir"])
    config["operator"]["quantize"] = r["quantize_at_test"]
    config["data"]["val_length"] = r["samples"]
    dataset = build_dataset(config, "test")
    batches = _measure(dataset, Measurement(config, image_shape))
    b, i = divmod(r["example"]["index"], BATCH)
    y, op, sigma, x = batches[b]
    T = r["rim"]["T"]
    examples = {"noisy": y[i], "TV": tv_reconstruct(op, y, r["tv"]["lam"], iterations=r["tv"]["iterations"],
                                                    tolerance=1e-6)[i],
                f"RIM-denoise (t={T})": solver(y, op, sigma=sigma, steps=T)[-1][i]}
    if "transfer" in r:
        t_solver, _, _, _ = load_solver(r["transfer"]["run_dir"])
        examples[f"RIM-3task (t={r['transfer']['T']})"] = t_solver(y, op, sigma=sigma, steps=r["transfer"]["T"])[-1][i]
    examples["truth"] = x[i]
    return {**r, "_examples": examples}


def markdown(summary: dict) -> str:
    s = summary["settings"]
    factor = summary["factor"]
    lines = ["# RIM denoising (RIM paper Tables 1-2) at laptop scale", "",
             f"Mean PSNR (dB) / SSIM on {s[0]['samples']} held-out 32x32 patches of the 5 test photographs "
             "(same patches and noise for every column), values in [0, 1], data_range 1. "
             f"RIM columns: at the training horizon T and at {factor}T (iterating past T). "
             "TV weight chosen on validation patches of each setting. "
             "Generated by `python projects/rim2017/rim_denoising.py`.", "",
             "| setting | noisy PSNR / SSIM | TV PSNR / SSIM (lam) | RIM-denoise PSNR t=T / t=2T | "
             "RIM-denoise SSIM t=T / t=2T | RIM-3task PSNR t=T / t=2T | RIM-3task SSIM t=T / t=2T |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in s:
        n, tv, rim = r["noisy"], r["tv"], r["rim"]
        row = [r["label"], f"{n['psnr']['mean']:.2f} / {n['ssim']['mean']:.3f}",
               f"{tv['psnr']['mean']:.2f} / {tv['ssim']['mean']:.3f} ({tv['lam']:g})",
               f"**{rim['psnr_T']:.2f}** / {rim['psnr_last']:.2f} (T={rim['T']})",
               f"{rim['ssim_T']:.3f} / {rim['ssim_last']:.3f}"]
        if "transfer" in r:
            t = r["transfer"]
            row += [f"{t['psnr_T']:.2f} / {t['psnr_last']:.2f} (T={t['T']})", f"{t['ssim_T']:.3f} / {t['ssim_last']:.3f}"]
        else:
            row += ["–", "–"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Best iterate and paired comparison:", "",
              "| setting | RIM-denoise best (t) | RIM > TV on (share of patches, t=T) | RIM-3task best (t) | "
              "per-patch PSNR std (RIM, t=T) |", "|---|---:|---:|---:|---:|"]
    for r in s:
        rim = r["rim"]
        tb = f"{r['transfer']['best']['psnr']:.2f} ({r['transfer']['best']['step']})" if "transfer" in r else "–"
        lines.append(f"| {r['label']} | {rim['best']['psnr']:.2f} ({rim['best']['step']}) | "
                     f"{100 * rim['beats_tv_fraction_at_T']:.0f} % | {tb} | {rim['psnr_std_per_iterate'][rim['T'] - 1]:.2f} |")
    lines += ["", "## Training runs", "",
              "| run | trained on | parameters | epochs x patches | optimiser steps | eps learned | "
              "val PSNR after training | training wall time |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    seen = set()
    for r in s:
        rim = r["rim"]
        if r["run_dir"] in seen:
            continue
        seen.add(r["run_dir"])
        t = rim["train"]
        wall = "–" if t["wall_s"] is None else f"{t['wall_s'] / 60:.1f} min ({t['wall_s']:.0f} s)"
        lines.append(f"| `{r['run_dir']}` | {'grey' if r['grey'] else 'RGB'}, sigma={_sigma_text(r['noise_sigma'])} | "
                     f"{t['parameters']} | {t['epochs']} x {t['patches_seen'] // max(1, t['epochs'])} | "
                     f"{t['optimizer_steps']} | {_fmt(t['eps_learned'], 3)} | {_fmt(t['final_val_psnr'])} | {wall} |")
    tr = next((r["transfer"] for r in s if "transfer" in r), None)
    if tr:
        lines.append(f"| `{tr['run_dir']}` (RIM-3task stand-in) | Gaussian random projections, see its config | – | – | – | "
                     f"{tr['eps_learned']:.3f} | – | see projects/rim2017/results/rim_figure2.md |")
    lines += ["", "TV: weight from the grid " + ", ".join(f"{g:g}" for g in summary["tv_grid"])
              + f" by mean validation PSNR ({s[0]['tv']['val_samples']} validation patches, 100 MFISTA iterations), "
              f"test with {s[0]['tv']['iterations']} iterations.", ""]
    commands = []
    for r in s:
        c = r["rim"]["train"]["command"]
        if c and c not in commands:
            commands.append(c)
    commands.append(summary["command"])
    lines += ["## Commands", "", "Run from the repository root, one after another:", "", "```bash", *commands, "```", ""]
    if summary.get("notes"):
        lines += [summary["notes"].rstrip(), ""]
    return "\n".join(lines)


def figures(settings: list[dict], stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(r["_examples"]) for r in settings)
    import textwrap

    fig, axes = plt.subplots(len(settings), cols, figsize=(1.55 * cols + 0.4, 1.85 * len(settings)), squeeze=False)
    for row, r in enumerate(settings):
        for j in range(cols):
            axes[row, j].axis("off")
        for j, (name, img) in enumerate(r["_examples"].items()):
            ax = axes[row, j]
            img = img.detach().clamp(0, 1)
            if img.shape[0] == 3:
                ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            else:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            psnr = r["example"]["psnr"].get(name)
            ax.set_title(name + ("" if psnr is None else f"\n{psnr:.2f} dB"), fontsize=7)
        axes[row, 0].text(-0.08, 0.5, textwrap.fill(r["label"], 26), transform=axes[row, 0].transAxes, rotation=90,
                          ha="right", va="center", fontsize=6)
    fig.tight_layout(pad=0.3, w_pad=0.2, h_pad=0.4)
    fig.savefig(stem.with_suffix(".png"), dpi=130)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(settings), figsize=(3.3 * len(settings), 3.0), squeeze=False)
    for ax, r in zip(axes[0], settings):
        for key, name, color in (("rim", "RIM-denoise", "tab:blue"), ("transfer", "RIM-3task", "tab:orange")):
            if key in r:
                p = r[key]["psnr_per_iterate"]
                ax.plot(range(1, len(p) + 1), p, marker=".", markersize=3, color=color, label=name)
                ax.axvline(r[key]["T"], color=color, linestyle="--", linewidth=0.8)
        ax.axhline(r["tv"]["psnr"]["mean"], color="tab:red", linestyle="-.", linewidth=1, label=f"TV (lam={r['tv']['lam']:g})")
        ax.axhline(r["noisy"]["psnr"]["mean"], color="gray", linestyle=":", label="noisy")
        ax.set_title(r["label"], fontsize=8)
        ax.set_xlabel("iteration t (dashed: T)")
        ax.set_ylabel("mean PSNR (dB)")
        ax.set_ylim(bottom=r["noisy"]["psnr"]["mean"] - 3)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(f"{stem}_curves.png", dpi=110)
    plt.close(fig)


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", action="append",
                        help="LABEL=RUN_DIR[:quantize] (repeatable; one table row each)")
    parser.add_argument("--transfer", help="a RIM trained on another task (grey), applied unchanged to grey settings")
    parser.add_argument("--factor", type=int, default=2, help="evaluate every RIM for factor x its T iterations")
    parser.add_argument("--tv-val-samples", type=int, default=128, help="validation patches for choosing the TV weight")
    parser.add_argument("--out", default="runs/bench/rim_denoising", help="output stem (the README's table: --out projects/rim2017/results/rim_denoising)")
    parser.add_argument("--notes", help="Markdown file appended to STEM.md")
    parser.add_argument("--samples", type=int, help="test patches (default: data.val_length of each run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--figures-only", action="store_true",
                        help="only redraw STEM.png / STEM_curves.png from STEM.json (recomputes the example patch)")
    parser.add_argument("--markdown-only", action="store_true",
                        help="only rewrite STEM.md from an existing STEM.json (and --notes), no computation")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    stem = Path(args.out)
    if args.markdown_only:
        summary = json.loads(stem.with_suffix(".json").read_text())
        summary.pop("notes", None)
        if args.notes:
            summary["notes"] = Path(args.notes).read_text()
            summary["command"] = summary["command"].split(" --notes ")[0] + f" --notes {args.notes}"
        stem.with_suffix(".md").write_text(markdown(summary))
        stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
        print(markdown(summary))
        return
    if args.figures_only:
        summary = json.loads(stem.with_suffix(".json").read_text())
        settings = [_redo_example(r, args.factor) for r in summary["settings"]]
        figures(settings, stem)
        return
    if not args.setting:
        parser.error("--setting is required (or --markdown-only)")
    settings = []
    for spec in args.setting:
        label, _, target = spec.rpartition("=")
        run, _, flag = target.partition(":")
        if flag not in ("", "quantize"):
            parser.error(f"unknown flag {flag!r} in {spec!r}")
        start = time.perf_counter()
        settings.append(run_setting(label, Path(run), flag == "quantize", args.transfer, args.factor, args.tv_val_samples,
                                     args.samples))
        print(f"{label}: done in {time.perf_counter() - start:.0f} s", flush=True)
    quoted = " ".join(f'--setting "{s}"' for s in args.setting)
    summary = {
        "description": "RIM paper (Putzky & Welling 2017) denoising tables at laptop scale: noisy vs TV vs RIM-denoise "
                       "vs RIM-3task (random-projection RIM applied unchanged) on held-out test patches",
        "machine": f"{platform.machine()} CPU, 1 torch thread, {platform.python_implementation()} {platform.python_version()}",
        "factor": args.factor,
        "tv_grid": list(TV_GRID),
        "command": f"OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python projects/rim2017/rim_denoising.py {quoted}"
                   + (f" --transfer {args.transfer}" if args.transfer else "")
                   + (f" --samples {args.samples}" if args.samples else "") + f" --out {args.out}"
                   + (f" --notes {args.notes}" if args.notes else ""),
        "settings": settings,
    }
    if args.notes:
        summary["notes"] = Path(args.notes).read_text()
    stem.parent.mkdir(parents=True, exist_ok=True)
    figures(settings, stem)
    stem.with_suffix(".json").write_text(json.dumps(_clean(summary), indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
