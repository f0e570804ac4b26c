"""Compare trained runs and classical baselines on identical held-out measurements: ``l2i bench compare``.

All runs must share their data and operator config (the script checks); each test batch is
measured once and handed to every method, so differences are due to the methods alone.
Classical baselines: the adjoint (``zero-filled`` for MRI, ``adjoint`` otherwise), filtered
back-projection for CT (``fbp``), and total variation (``tv``) whose weight is chosen on the
*validation* split and then applied unchanged to the test split.

Writes ``OUT.json`` (``{method: {"psnr", "ssim", "nmse"}}`` means plus per-method details),
``OUT.md`` (table) and ``OUT.png`` (reconstructions and error maps of one test sample).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..data.items import item_shape, split_item
from ..outputs import OutputPathError, check_output_file
from ..solvers.tv import choose_tv_weight, tv_reconstruct
from ..train.datasets import build_dataset
from ..operators.generator import Measurement
from ..inference import load_solver
from ..inference.ensemble import ENSEMBLE_SIZES, self_ensemble
from ..train.validate import EVAL_SEED, magnitude, score_batch
from ..operators.likelihood import back_projection

METRICS = ("psnr", "ssim", "nmse")
TV_ITERATIONS = 200


def _adjoint_name(config: dict) -> str:
    return "zero-filled" if config["operator"]["name"] == "mri" else "adjoint"


def _scored_problem(config: dict, section: str) -> dict:
    """The part of a config's ``section`` that shapes validation and test data.

    Training-only keys are left out, so a run fine-tuned with other augmentations (``brain_mix``'s
    ``data.params`` other than its base ``scale``) or a longer epoch is compared with its parent.
    """
    part = dict(config[section])
    if section == "data":
        part.pop("train_length", None)
        if part["name"] == "brain_mix":
            part["params"] = {"scale": float(part["params"].get("scale", 0.35))}
    return part


def _check_same_problem(configs: dict[str, dict]) -> dict:
    names = list(configs)
    first = configs[names[0]]
    for name in names[1:]:
        for section in ("data", "operator"):
            if _scored_problem(configs[name], section) != _scored_problem(first, section):
                raise ValueError(f"runs {names[0]!r} and {name!r} differ in their '{section}' config; "
                                 "compare runs trained on the same problem")
    return first


def with_overrides(config: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """``config`` with ``key=value`` overrides of its ``data`` / ``operator`` sections, checked like a config file.

    This is how a model is scored out of distribution: other noise, another hole or blur
    (``operator.*``), or another image family (``data.name=ellipses``).
    """
    from ..train.config import DEFAULTS, _merge, parse_override

    user = copy.deepcopy(config)
    for item in overrides:
        keys, value = parse_override(item)
        if keys[0] not in ("data", "operator"):
            raise ValueError(f"--set may change only data.* and operator.* (the test problem), got {item!r}")
        node = user
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return _merge(DEFAULTS, user)


def _batches(config: dict, split: str, seed: int, samples: int | None, batch_size: int = 8):
    """Yield ``(x, y, op, sigma)`` for ``split`` with measurements drawn from a fixed seed."""
    dataset = build_dataset(config, split)
    if samples is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(samples, len(dataset))))
    measurement = Measurement(config, item_shape(dataset[0]))
    generator = torch.Generator().manual_seed(seed)
    for item in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        x, kspace = split_item(item)  # kspace: the items' own coil k-space (data.params.own_coils), else None
        y, op, sigma = measurement(x, generator) if kspace is None else measurement(x, generator, kspace=kspace)
        yield x, y, op, sigma


def compare(runs: dict[str, str | Path], split: str = "test", tv: bool = True, samples: int | None = None,
            show_progress: bool = True, tv_iterations: int = TV_ITERATIONS, tv_grid: list[float] | None = None,
            tv_validation_samples: int | None = None, overrides: list[str] | tuple[str, ...] = (),
            test_overrides: list[str] | tuple[str, ...] = (), weights: str = "best", ensemble: int = 1) -> dict:
    """Score every run and the classical baselines on the same measurements of ``split``.

    ``weights`` picks each run's ``"best"`` (lowest validation loss) or ``"last"`` weights.
    ``ensemble`` > 1 scores each run as the mean of that many flipped and rotated copies
    (:func:`~learn2invert.inference.ensemble.self_ensemble`), named ``NAME xN`` in the table.

    ``overrides`` (``key=value`` on ``data.*`` / ``operator.*``) change the test problem, e.g. for
    out-of-distribution scoring; the TV weight is then chosen on the changed problem's validation split.
    ``test_overrides`` change only the scored data, not the validation split: e.g. real scans
    (``data.name=dicom``) scored with the TV weight chosen on the models' own validation data,
    never on the images that are scored.

    Returns ``{"methods": {name: {metric: {"mean", "std"}}}, "seconds": {name: s}, "tv_weight": lam,
    "example": {name: (C, H, W) tensor of one sample}, "config": config}``.
    """
    from tqdm import tqdm

    if not runs:
        raise ValueError("give at least one run (name=RUN_DIR)")
    if samples is not None and samples < 1:
        raise ValueError(f"--samples must be >= 1, got {samples}")
    if ensemble not in ENSEMBLE_SIZES:
        raise ValueError(f"--ensemble must be one of {ENSEMBLE_SIZES}, got {ensemble}")
    solvers, configs = {}, {}
    for name, run_dir in runs.items():
        solver, config, _, _ = load_solver(run_dir, weights=weights)
        shown = f"{name} x{ensemble}" if ensemble > 1 else name
        solvers[shown], configs[name] = solver, config
    config = with_overrides(_check_same_problem(configs), overrides)
    data_range = config["data"]["data_range"]
    baseline = _adjoint_name(config)

    tv_weight = None
    if tv:
        n_val = tv_validation_samples if tv_validation_samples is not None else samples
        validation = [(y, op, x) for x, y, op, _ in _batches(config, "val", EVAL_SEED + 1, n_val)]
        tv_weight, _ = choose_tv_weight(validation, grid=tv_grid, iterations=tv_iterations, data_range=data_range,
                                        show_progress=show_progress)

    test_config = with_overrides(config, test_overrides)
    methods = [baseline] + (["fbp"] if config["operator"]["name"] == "ct" else []) + (["tv"] if tv else []) + list(solvers)
    scores = {m: {k: [] for k in METRICS} for m in methods}
    seconds = {m: 0.0 for m in methods}
    example = {}
    batches = list(_batches(test_config, split, EVAL_SEED, samples))
    bar = tqdm(total=sum(b[0].shape[0] for b in batches) * len(methods), desc=f"compare on {split}", unit="recon",
               disable=not show_progress)
    for x, y, op, sigma in batches:
        for m in methods:
            start = time.perf_counter()
            with torch.no_grad():
                if m == baseline:
                    est = back_projection(op, y)
                elif m == "fbp":
                    est = op.fbp(y)
                elif m == "tv":
                    est = tv_reconstruct(op, y, tv_weight, iterations=tv_iterations)
                else:
                    est = self_ensemble(solvers[m], y, op, ensemble, sigma=sigma)
            seconds[m] += time.perf_counter() - start
            for k, v in score_batch(est, x, data_range).items():
                scores[m][k].append(v)
            if m not in example:
                example[m] = est[0].detach()
            bar.update(x.shape[0])
        example.setdefault("truth", x[0])
    bar.close()
    n = sum(b[0].shape[0] for b in batches)
    summary = {m: {k: {"mean": float(torch.cat(v).mean()), "std": float(torch.cat(v).std(unbiased=False))}
                   for k, v in s.items()} for m, s in scores.items()}
    return {"methods": summary, "seconds_per_sample": {m: s / n for m, s in seconds.items()}, "tv_weight": tv_weight,
            "samples": n, "split": split, "example": example, "config": test_config, "ensemble": ensemble}


def markdown_table(result: dict) -> str:
    lines = ["| method | PSNR (dB) | SSIM | NMSE | s / sample |", "|---|---:|---:|---:|---:|"]
    for m, s in result["methods"].items():
        lines.append(f"| {m} | {s['psnr']['mean']:.2f} ± {s['psnr']['std']:.2f} | {s['ssim']['mean']:.4f} | "
                     f"{s['nmse']['mean']:.4f} | {result['seconds_per_sample'][m]:.3f} |")
    return "\n".join(lines)


def plot_example(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    example = result["example"]

    def displayable(image):  # (C, H, W) -> (H, W) magnitude / grey, or (H, W, 3) for RGB
        image = image.detach().cpu()
        if image.shape[0] == 3:
            return image.permute(1, 2, 0).clamp(0, 1).numpy()
        return magnitude(image[None])[0].squeeze(0).numpy()

    truth = displayable(example["truth"])
    names = [m for m in result["methods"]] + ["truth"]
    vmax = float(truth.max())
    fig, axes = plt.subplots(2, len(names), figsize=(2.4 * len(names), 5.0), squeeze=False)
    for j, m in enumerate(names):
        image = displayable(example[m])
        axes[0, j].imshow(image, cmap="gray", vmin=0, vmax=vmax)
        title = m if m == "truth" else f"{m}\n{result['methods'][m]['psnr']['mean']:.2f} dB (mean)"
        axes[0, j].set_title(title, fontsize=8)
        error = abs(image - truth)
        axes[1, j].imshow(error.mean(axis=-1) if error.ndim == 3 else error, cmap="magma", vmin=0, vmax=0.25 * vmax)
        axes[1, j].set_title("|error| (x4)" if m != "truth" else "", fontsize=8)
        for ax in axes[:, j]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def check_out(out: str | Path) -> Path:
    """Refuse, before any work, an ``--out`` that :func:`write` could not write: an existing folder
    (``--out`` is a path without suffix, not a folder), a folder in place of one of the three files,
    or a folder that cannot be created or written into. Creates the folder."""
    out = Path(out)
    if out.is_dir():
        raise OutputPathError(f"--out {out} is an existing folder; --out is a path without suffix (it writes "
                              f"OUT.json, OUT.md, OUT.png), e.g. {out / 'compare'}")
    for suffix in (".json", ".md", ".png"):
        check_output_file(out.with_suffix(suffix), "--out file")
    return out


def write(result: dict, out: str | Path) -> Path:
    """Write ``out``.json / .md / .png; returns the JSON path."""
    out = check_out(out)
    payload = {"methods": result["methods"], "seconds_per_sample": result["seconds_per_sample"],
               "tv_weight": result["tv_weight"], "samples": result["samples"], "split": result["split"],
               "ensemble": result.get("ensemble", 1),
               "data": result["config"]["data"], "operator": result["config"]["operator"]}
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(payload, indent=1))
    out.with_suffix(".md").write_text(markdown_table(result) + "\n")
    plot_example(result, out.with_suffix(".png"))
    return json_path


def named_runs(items: list[str]) -> dict[str, str]:
    """``["irim=runs/a", ...]`` -> ``{"irim": "runs/a", ...}``; a malformed item is a one-line ``ValueError``
    (not argparse's usage text, which wraps over several lines)."""
    runs = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"runs are given as NAME=RUN_DIR (e.g. irim=runs/irim), got {item!r}")
        runs[name] = path
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="l2i bench compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR", help="trained runs to compare, e.g. irim=runs/mri_irim_4x")
    parser.add_argument("--out", required=True, help="output path without suffix (writes .json, .md, .png)")
    parser.add_argument("--split", default="test", choices=("test", "val"))
    parser.add_argument("--samples", type=int, help="limit the number of held-out samples")
    parser.add_argument("--no-tv", action="store_true", help="skip the TV baseline")
    parser.add_argument("--tv-iterations", type=int, default=TV_ITERATIONS, help=f"FISTA iterations (default {TV_ITERATIONS})")
    parser.add_argument("--tv-grid", type=float, nargs="+", help="candidate TV weights (default: 13 log-spaced values)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change the test problem (data.* / operator.*), e.g. operator.noise_sigma=0.25 or data.name=ellipses")
    parser.add_argument("--test-set", dest="test_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change only the scored data, not the validation data the TV weight is chosen on, e.g. "
                             "--test-set data.name=dicom --test-set data.root=pydicom:MR_small.dcm")
    parser.add_argument("--weights", default="best", choices=("best", "last"),
                        help="each run's weights of the lowest validation loss (default) or of its last step")
    parser.add_argument("--ensemble", type=int, default=1, choices=ENSEMBLE_SIZES,
                        help="score each run as the mean of 2, 4 or 8 flipped and rotated copies of each problem "
                             "(geometric self-ensemble; that many times the time)")
    args = parser.parse_args(argv)
    runs = named_runs(args.runs)
    check_out(args.out)  # scoring and the TV search take minutes: refuse an unwritable --out first
    result = compare(runs, args.split, tv=not args.no_tv, samples=args.samples, tv_iterations=args.tv_iterations,
                     tv_grid=args.tv_grid, overrides=args.overrides, test_overrides=args.test_overrides,
                     weights=args.weights, ensemble=args.ensemble)
    path = write(result, args.out)
    print(markdown_table(result))
    if result["tv_weight"] is not None:
        print(f"TV weight {result['tv_weight']:.3g} (chosen on the validation split)")
    print(f"wrote {path} and its .md / .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
