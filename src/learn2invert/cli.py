"""The ``l2i`` command."""
from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .registry import BENCHMARKS


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main_summary, run_demo

    print(main_summary(run_demo(args.out, steps=args.steps, seed=args.seed)))
    return 0


def _cmd_tour(args: argparse.Namespace) -> int:
    from .tour import run_tour

    run_tour(args.out, size=args.size, seed=args.seed)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import math
    import warnings

    from .train.loop import DivergenceWarning, TrainingDiverged, train

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DivergenceWarning)  # printed below, as one line
            result = train(args.config, args.out, overrides=tuple(args.set), resume=args.resume is not None)
    except TrainingDiverged as err:
        print(f"l2i train: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"\nl2i train: interrupted; the last checkpoint in {args.out} is kept. Continue with: "
              f"l2i train --resume {args.out}", file=sys.stderr)
        return 130
    if result.get("rank", 0) == 0:  # under torchrun, one line for the whole job
        last = result["epochs"][-1] if result["epochs"] else {}
        print(f"run: {result['run_dir']}  " + ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k.startswith("val_")))
    if result.get("warning"):
        # A non-finite final validation loss, or a PSNR below 0 dB (worse than an all-black image), is a
        # failed run (exit 4); a large PSNR drop from the run's best only a warning.
        last = result["epochs"][-1]
        failed = not math.isfinite(last.get("val_loss", 0.0)) or last.get("val_psnr", 0.0) < 0
        if result.get("rank", 0) == 0:
            print(f"l2i train: {'error' if failed else 'warning'}: {result['warning']}", file=sys.stderr)
        return 4 if failed else 0
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .inference.evaluate import evaluate_run

    result = evaluate_run(args.run_dir, split=args.split, steps=args.steps, out=args.out, length=args.samples)
    out = args.out or f"{args.run_dir}/eval.json"
    print(f"PSNR {result['psnr']['mean']:.2f} ± {result['psnr']['std']:.2f} dB, SSIM {result['ssim']['mean']:.4f}, "
          f"NMSE {result['nmse']['mean']:.4f}  (adjoint: {result['adjoint']['psnr']['mean']:.2f} dB)  -> {out}")
    return 0


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from .inference.reconstruct import reconstruct

    if args.pretrained:
        from . import pretrained

        if len(args.paths) != 2:
            raise ValueError("with --pretrained NAME give INPUT and OUTPUT only (no run folder)")
        run_dir, (input_path, output) = pretrained.path(args.pretrained), args.paths
    elif len(args.paths) != 3:
        raise ValueError("give RUN_DIR INPUT OUTPUT (or --pretrained NAME INPUT OUTPUT)")
    else:
        run_dir, input_path, output = args.paths
    result = reconstruct(run_dir, input_path, output, simulate=args.simulate, seed=args.seed,
                         axis=args.axis, device=args.device, frame=args.frame, sigma=args.sigma,
                         ensemble=args.ensemble)
    for name, scores in result.get("metrics", {}).items():
        print(f"{name}: PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.4f}")
    print(f"wrote {result['output']} and {result['side_by_side']}")
    return 0


def _cmd_pretrained(args: argparse.Namespace) -> int:
    from . import pretrained

    if args.action == "export":
        if not args.run_dir or not args.name:
            raise ValueError("l2i pretrained export needs RUN_DIR and NAME")
        folder = pretrained.export(args.run_dir, args.name, pretrained.card_from_comparisons(
            args.method or args.name, args.metrics, task=args.task, data=args.data, command=args.command),
            weights=args.weights)
        print(f"exported {args.run_dir} as {args.name}: {folder}")
        return 0
    names = pretrained.available()
    if not names:
        print("no shipped models in this installation")
        return 0
    width = max(12, *(len(n) for n in names))
    print(f"{'name':<{width}} {'solver':<8} {'parameters':>10} {'steps':>6}  task")
    for name in names:
        info = pretrained.card(name)
        print(f"{name:<{width}} {info.get('solver', ''):<8} {info.get('parameters', 0):>10,} "
              f"{info.get('optimiser_steps', 0):>6}  {info.get('task', '')}")
        for test, methods in info.get("metrics", {}).items():
            row = ", ".join(f"{m} {v['psnr']:.2f} dB" for m, v in methods.items())
            print(f"{'':<{width}} {test}: {row}")
    print(f"model cards: {pretrained.shipped.ROOT}/<name>/README.md")
    return 0


# Paper reproductions left the package for projects/<paper>/ in the repository (configs, run.py, README).
MOVED_BENCHMARKS = {
    "superres": "projects/rim2017 (python projects/rim2017/run.py --only superres)",
    "flows": "projects/flow_unfolding2021 (python projects/flow_unfolding2021/run.py)",
    "luser": "projects/luser2022 (python projects/luser2022/run.py)",
    "quality": "projects/<paper>/run.py (rim2017, irim2019, flow_unfolding2021, luser2022)",
}


def _cmd_bench(args: argparse.Namespace) -> int:
    return BENCHMARKS.get(args.benchmark)(args.rest) or 0


def _check_benchmark_name(name: str) -> str:
    """argparse type of ``l2i bench NAME``: a general benchmark, or a pointer to where a paper's went."""
    if name in MOVED_BENCHMARKS:
        raise argparse.ArgumentTypeError(f"'{name}' reproduced a paper's tables and moved out of the package to "
                                         f"{MOVED_BENCHMARKS[name]} in the learn2invert repository")
    if name not in BENCHMARKS:
        raise argparse.ArgumentTypeError(f"unknown benchmark '{name}' (choose from {', '.join(sorted(BENCHMARKS))})")
    return name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l2i", description="learn2invert: learned iterative solvers of inverse problems")
    parser.add_argument("--version", action="version", version=f"learn2invert {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the main job: the shipped MRI models vs zero-filled and TV on held-out brain "
                                       "slices and a real MR scan, a short fine-tuning run, training memory; a report")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--steps", type=int, default=20, help="optimiser steps of the fine-tuning run (default: 20)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)

    tour = sub.add_parser("tour", help="every forward operator on embedded data, reconstructed by classical baselines")
    tour.add_argument("--out", default="runs/tour", help="output folder (default: runs/tour)")
    tour.add_argument("--size", type=int, default=128, help="image size in pixels (default: 128)")
    tour.add_argument("--seed", type=int, default=0)
    tour.set_defaults(func=_cmd_tour)

    tr = sub.add_parser("train", help="train the solver of a YAML config (data-parallel under torchrun)",
                        description="Train the solver of a YAML config. Runs unchanged under torchrun, e.g. "
                                    "torchrun --nproc_per_node=4 -m learn2invert.cli train CONFIG --out RUN "
                                    "(train.batch_size is the global batch; see docs/distributed.md).")
    tr.add_argument("config", nargs="?", help="YAML config (not needed with --resume)")
    tr.add_argument("--out", help="run folder (default: runs/<config name>)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key by its dotted path, e.g. --set train.epochs=3 (repeatable)")
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last finished epoch (from the "
                    "previous checkpoint, with a warning, if the latest one is corrupt)")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="score a trained run on held-out data (writes eval.json, eval.md, figures)")
    ev.add_argument("run_dir")
    ev.add_argument("--split", default="test", choices=("test", "val"))
    ev.add_argument("--steps", type=int, help="iterations to run; scores every iterate (PSNR-vs-iteration curve)")
    ev.add_argument("--samples", type=int, help="number of held-out samples (default: data.val_length)")
    ev.add_argument("--out", help="JSON output path (default: RUN_DIR/eval.json)")
    ev.set_defaults(func=_cmd_eval)

    rc = sub.add_parser("reconstruct",
                        help="reconstruct your own file (image, NIfTI volume, DICOM image or series, fastMRI .h5) with a trained run",
                        description="l2i reconstruct RUN_DIR INPUT OUTPUT, or l2i reconstruct --pretrained NAME INPUT "
                                    "OUTPUT. INPUT: a measured image (denoising, blur, super-resolution), a measured CT sinogram (.npy), a clean image (also .dcm), "
                                    "NIfTI volume or DICOM series (a folder of .dcm slices) with --simulate, or a fastMRI single- or multi-coil .h5 (MRI "
                                    "runs; a fully sampled one is undersampled with the run's masks first). OUTPUT: "
                                    ".png or .npy for images, .nii/.nii.gz/.npy for volumes (and DICOM input, keeping its spacing), .h5 for fastMRI files; a "
                                    "<stem>_side_by_side.png is written beside it.")
    rc.add_argument("paths", nargs="+", metavar="[RUN_DIR] INPUT OUTPUT",
                    help="a run folder of l2i train (left out with --pretrained), the input and the output file")
    rc.add_argument("--pretrained", metavar="NAME", help="use a shipped model instead of a run folder (l2i pretrained list)")
    rc.add_argument("--simulate", action="store_true",
                    help="INPUT is the clean truth: simulate the run's measurement, reconstruct and score it")
    rc.add_argument("--seed", type=int, default=0,
                    help="seed of the simulated physics and noise, and of the mask that undersamples a fully sampled "
                         "fastMRI file (default: 0)")
    rc.add_argument("--axis", type=int, default=2, choices=(0, 1, 2),
                    help="NIfTI volumes: reconstruct the slices along this axis (default: 2, axial)")
    rc.add_argument("--frame", type=int, help="4D NIfTI series: reconstruct this frame (0-based)")
    rc.add_argument("--sigma", type=float, metavar="S",
                    help="noise standard deviation of INPUT, in the image's [0, 1] units for denoising, blur and "
                         "super-resolution (e.g. 0.1 = 25.5/255): told to the solver instead of the run's "
                         "operator.noise_sigma; with --simulate also the simulated noise (default: the run's)")
    rc.add_argument("--ensemble", type=int, default=1, choices=(1, 2, 4, 8),
                    help="average the reconstructions of 2, 4 or 8 flipped and rotated copies of the problem "
                         "(geometric self-ensemble; 8 needs square images; that many times the time)")
    rc.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="where the solver runs (default: cpu)")
    rc.set_defaults(func=_cmd_reconstruct)

    pt = sub.add_parser("pretrained", help="the trained models shipped with the package (l2i pretrained list)")
    pt.add_argument("action", choices=("list", "export"), help="list: names, sizes, steps and measured metrics; "
                    "export RUN_DIR NAME: copy a run's best weights into the package with a model card")
    pt.add_argument("run_dir", nargs="?", help="export: the run folder")
    pt.add_argument("name", nargs="?", help="export: the shipped model's name")
    pt.add_argument("--metrics", nargs="*", default=[], metavar="LABEL=COMPARE_JSON",
                    help="export: results of l2i bench compare to put on the card, e.g. 'test 4x=docs/benchmarks/x.json'")
    pt.add_argument("--method", help="export: the model's name in those results (default: NAME)")
    pt.add_argument("--task", default="", help="export: one line on what the model reconstructs")
    pt.add_argument("--data", default="", help="export: one line on the training data")
    pt.add_argument("--command", default="", help="export: the exact training command")
    pt.add_argument("--weights", default="best", choices=("best", "last"),
                    help="export: the weights of the lowest validation loss (default) or of the last step")
    pt.set_defaults(func=_cmd_pretrained)

    be = sub.add_parser("bench", help="measure memory, speed or operators; each writes JSON + Markdown (+ a plot)",
                        description="\n".join([f"{k}: {BENCHMARKS.help(k)}" for k in BENCHMARKS]
                                              + ["", "Paper reproductions: projects/<paper>/run.py in the repository."]),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    be.add_argument("benchmark", type=_check_benchmark_name, metavar="{" + ",".join(sorted(BENCHMARKS)) + "}")
    be.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark (see l2i bench NAME --help)")
    be.set_defaults(func=_cmd_bench)
    return parser


def _one_line_warning(command: str):
    """A ``warnings.formatwarning`` that prints a warning meant for the user (a colour photo made
    grey, a notice) as one line, ``l2i COMMAND: warning: ...``, instead of Python's two lines with
    the source file and line; other libraries' warnings keep Python's format."""
    import warnings

    python_format = warnings.formatwarning

    def format(message, category, filename, lineno, line=None):
        if "learn2invert" in str(filename) or category.__module__.split(".")[0] == "learn2invert":
            return f"l2i {command}: warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    return format


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        if args.resume:
            if args.config or (args.out and args.out != args.resume):
                parser.error("--resume RUN_DIR continues with the run's own config.yaml and folder: drop CONFIG and "
                             "--out (change settings with --set)")
            args.out = args.resume
        elif not args.config:
            parser.error("train needs a CONFIG (or --resume RUN_DIR)")
        elif not args.out:
            from pathlib import Path

            args.out = str(Path("runs") / Path(args.config).stem)
    import warnings

    python_format, warnings.formatwarning = warnings.formatwarning, _one_line_warning(args.command)
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (`l2i pretrained list | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ValueError as err:
        # Bad input is the user's to fix: say what is wrong without a traceback.
        print(f"l2i {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = python_format


if __name__ == "__main__":
    sys.exit(main())
