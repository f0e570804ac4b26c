"""Bad-input sweep (issue 17): run the mistakes a new user makes and classify what they get back.

    python scripts/bad_inputs.py [--out runs/bad_inputs.md] [--timeout 30] [--only SUBSTRING]

Every case is a subprocess of the real ``l2i`` command (or a short ``python -c`` for the Python
API) in a fresh temporary folder, with ``OMP_NUM_THREADS=1`` and a timeout. The fixtures (tiny
run folders of a random-projection RIM, a grey denoising RIM, a CT unrolled net and a flow prior,
and a handful of bad files) are made first by the same command, in seconds. Each result is
classified automatically:

- **clear**: nonzero exit, no ``Traceback`` and at most 3 lines on stderr (progress bars aside);
  for the Python API: an exception raised by learn2invert's own code, in at most 3 lines;
- **ok**: an input that looks wrong but is valid (``lr: 1e-4``, an RGB photo for a grey run) and
  does what the user meant, saying so where it converts something (the case's ``notice``);
- **traceback**: a Python traceback (for the Python API: an exception from inside a dependency);
- **silent**: exit 0 although the input is bad (or a valid input whose conversion went unsaid),
  or killed at the timeout.

It writes a Markdown table (input, command, class, first line of stderr) and prints the counts.
Read-only folders are made with ``chmod 555``; as root, the command then runs without the
``CAP_DAC_OVERRIDE`` capability (``setpriv``) so that the permissions apply.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
PROJECTS = ROOT / "projects"
SMOKE = CONFIGS / "smoke.yaml"
TINY = ("data.train_length=8", "data.val_length=2", "data.patch_size=8", "train.batch_size=2", "train.max_steps=1")
BIN = Path(sys.executable).parent
L2I = str(BIN / "l2i") if (BIN / "l2i").exists() else "l2i"
PY = sys.executable

# Python API cases run inside this wrapper: an exception raised by learn2invert's own code is a
# clear error (one line, as a user would read it); one raised inside torch/numpy is a traceback.
API_WRAPPER = r"""
import sys, traceback
try:
{body}
except Exception as err:
    frames = traceback.extract_tb(err.__traceback__)
    own = frames and "learn2invert" in frames[-1].filename
    if own:
        print(f"{{type(err).__name__}}: {{err}}", file=sys.stderr)
        sys.exit(2)
    traceback.print_exc()
    sys.exit(1)
"""


@dataclass
class Case:
    name: str
    argv: list[str]                  # l2i arguments, or ["-c", code] for the Python API
    api: bool = False
    expect: str = "error"            # error | ok (valid input: must exit 0 and print `notice` if given)
    notice: str | None = None        # regex the output must match for an `ok` case
    read_only: bool = False          # run without CAP_DAC_OVERRIDE so chmod 555 folders apply
    interrupt_after: float | None = None  # send SIGINT after this many seconds (Ctrl-C)
    timeout: float | None = None
    result: dict = field(default_factory=dict)


def sets(*items: str) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def api(name: str, code: str, **kw) -> Case:
    body = "\n".join("    " + line for line in code.strip().splitlines())
    return Case(name, ["-c", API_WRAPPER.format(body=body)], api=True, **kw)


PROGRESS = re.compile(r"(\d+%\|)|(\|\s*\d+/\d+\s*\[)|(\d+/\d+ \[\d)|(\?(it|batch|slice)/s)|(\[\d\d:\d\d<)")


def meaningful_lines(stderr: str) -> list[str]:
    """stderr lines a user reads: progress bars (tqdm, carriage returns) left out."""
    lines = []
    for raw in stderr.split("\n"):
        segments = [s for s in raw.split("\r") if s.strip()]
        segments = [s for s in segments if not PROGRESS.search(s)]
        if segments:
            lines.append(segments[-1].strip())
    return lines


def run(cmd: list[str], cwd: Path, timeout: float, read_only: bool = False,
        interrupt_after: float | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", COLUMNS="120")
    env.pop("PYTHONWARNINGS", None)
    if read_only and os.geteuid() == 0 and shutil.which("setpriv"):
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    killed = False
    try:
        if interrupt_after is not None:
            try:
                out, err = proc.communicate(timeout=interrupt_after)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGINT)
                out, err = proc.communicate(timeout=timeout)
        else:
            out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        killed = True
    return {"rc": proc.returncode, "stdout": out, "stderr": err, "killed": killed, "seconds": time.time() - start}


def classify(case: Case, res: dict) -> str:
    err = res["stderr"]
    if res["killed"]:
        return "silent"
    if "Traceback" in err:
        return "traceback"
    if case.expect == "ok":
        if res["rc"] == 0:
            if case.notice and not re.search(case.notice, res["stdout"] + err, re.IGNORECASE):
                return "silent"
            return "ok"
        return "clear" if 0 < len(meaningful_lines(err)) <= 3 else "traceback"
    if res["rc"] == 0:
        return "silent"
    lines = meaningful_lines(err)
    if not lines or len(lines) > 3:
        return "traceback"  # a wall of text (or nothing at all) is not one clear line
    return "clear"


# ------------------------------------------------------------------------------------------ fixtures

def make_fixtures(fx: Path, timeout: float) -> None:
    """Tiny run folders and bad files shared by the cases (made with the real command)."""
    import numpy as np

    fx.mkdir(parents=True, exist_ok=True)
    trainings = {
        "smoke": [str(SMOKE), *sets(*TINY)],
        "denoise": [str(PROJECTS / "rim2017" / "configs" / "rim_denoise_sigma25.yaml"), *sets(*TINY, "solver.params.steps=2",
                    "solver.params.conv_channels=4", "solver.params.hidden_channels=4")],
        "ct": [str(PROJECTS / "luser2022" / "configs" / "deq_ct_lu_dncnn.yaml"), *sets(*TINY, "data.patch_size=16", "solver.params.folds=2")],
        "flow": [str(PROJECTS / "flow_unfolding2021" / "configs" / "flow_prior.yaml"), *sets(*TINY, "solver.params.image_size=8", "solver.params.levels=2",
                 "solver.params.depth=1", "solver.params.hidden=8")],
    }
    for name, argv in trainings.items():
        if (fx / name / "best.safetensors").exists():
            continue
        res = run([L2I, "train", *argv, "--out", str(fx / name)], fx, timeout=max(timeout, 120))
        if res["rc"] != 0:
            raise SystemExit(f"fixture {name} failed to train:\n{res['stderr'][-3000:]}")
    # a copy of the smoke run with both checkpoint generations corrupted
    corrupt = fx / "corrupt"
    if corrupt.exists():
        shutil.rmtree(corrupt)
    shutil.copytree(fx / "smoke", corrupt)
    for f in corrupt.glob("*.safetensors"):
        f.write_bytes(b"\x00garbage, not safetensors" * 10)
    # a run folder without its config
    noconf = fx / "noconfig"
    if noconf.exists():
        shutil.rmtree(noconf)
    shutil.copytree(fx / "smoke", noconf)
    (noconf / "config.yaml").unlink()

    from skimage.io import imsave

    rng = np.random.default_rng(0)
    imsave(fx / "grey8.png", rng.integers(0, 256, (8, 8), dtype=np.uint8), check_contrast=False)
    imsave(fx / "grey64.png", rng.integers(0, 256, (64, 64), dtype=np.uint8), check_contrast=False)
    imsave(fx / "rgb32.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), check_contrast=False)
    nan = rng.random((16, 16)).astype(np.float32)
    nan[3, 4] = np.nan
    imsave(fx / "nan.tif", nan, check_contrast=False)
    inf = rng.random((16, 16)).astype(np.float32)
    inf[1, 1] = np.inf
    imsave(fx / "inf.tif", inf, check_contrast=False)
    (fx / "empty.png").write_bytes(b"")
    (fx / "truncated.png").write_bytes((fx / "grey64.png").read_bytes()[:60])
    (fx / "notes.txt").write_text("this is not an image\n")
    (fx / "fake.dcm").write_text("this is not DICOM\n")
    (fx / "fake.nii.gz").write_text("this is not NIfTI\n")
    (fx / "fake.h5").write_text("this is not HDF5\n")
    (fx / "empty.yaml").write_text("")
    (fx / "list.yaml").write_text("- a\n- b\n")
    (fx / "syntax.yaml").write_text("seed: 0\ndata:\n  name: natural_patches\n  patch_size: [16\ntrain:\n  epochs: 1\n")
    text = SMOKE.read_text()
    (fx / "sci.yaml").write_text(text.replace("optimizer: {name: adam, lr: 0.001}",
                                              "optimizer: {name: adam, lr: 1e-3, weight_decay: 1e-5}\n"
                                              "  schedule: {name: warmup_cosine, warmup_steps: 1, final_lr_fraction: 2e-2}"))
    (fx / "unknown_key.yaml").write_text(text.replace("seed: 0", "seed: 0\nepohcs: 3"))
    (fx / "tabs.yaml").write_text(text.replace("  name: natural_patches", "\tname: natural_patches"))
    np.save(fx / "wrong_sino.npy", rng.random((7, 5)).astype(np.float32))
    np.save(fx / "nan_sino.npy", np.full((18, 24), np.nan, dtype=np.float32))
    np.save(fx / "img4d.npy", rng.random((1, 1, 8, 8)).astype(np.float32))
    import h5py

    with h5py.File(fx / "no_kspace.h5", "w") as f:
        f.create_dataset("reconstruction_esc", data=np.zeros((2, 32, 32), dtype=np.float32))
        f.attrs["acquisition"] = "CORPD_FBK"
    import nibabel as nib

    vol = rng.random((8, 8, 2)).astype(np.float32)
    vol[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(vol, np.eye(4)), fx / "inf.nii.gz")
    _dicom_fixtures(fx)
    (fx / "afile").write_text("a file where a folder should be\n")
    (fx / "locked").mkdir(exist_ok=True)
    (fx / "locked").chmod(0o555)
    (fx / "outdir.png").mkdir(exist_ok=True)
    (fx / "outdir.json").mkdir(exist_ok=True)
    (fx / "emptydir").mkdir(exist_ok=True)


def _dicom_fixtures(fx: Path) -> None:
    """Bad DICOM series made from pydicom's real MR slice: two series in one folder, a folder with a
    truncated slice, a slice without pixel data, and a series of one good slice (valid)."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    source = Path(get_testdata_file("MR_small.dcm"))
    for name in ("mixed_series", "truncated_series", "one_slice_series"):
        (fx / name).mkdir(exist_ok=True)
    for i, series in enumerate((None, generate_uid(entropy_srcs=["learn2invert bad inputs: a second series"]))):
        ds = pydicom.dcmread(source)
        ds.InstanceNumber = i + 1
        if series:
            ds.SeriesInstanceUID = series
        ds.save_as(fx / "mixed_series" / f"slice{i}.dcm")
    shutil.copyfile(source, fx / "truncated_series" / "slice0.dcm")
    shutil.copyfile(source, fx / "one_slice_series" / "slice0.dcm")
    (fx / "truncated_series" / "slice1.dcm").write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    ds = pydicom.dcmread(source)
    del ds.PixelData
    ds.save_as(fx / "no_pixels.dcm")


# ------------------------------------------------------------------------------------------ cases

def cases(fx: Path) -> list[Case]:
    f = lambda name: str(fx / name)  # noqa: E731
    smoke, tiny = str(SMOKE), sets(*TINY)
    C: list[Case] = []
    add = C.append

    # --- configs and train
    add(Case("YAML syntax error", ["train", f("syntax.yaml"), "--out", "r"]))
    add(Case("tab indentation in YAML", ["train", f("tabs.yaml"), "--out", "r", *tiny]))
    add(Case("empty config file", ["train", f("empty.yaml"), "--out", "r"]))
    add(Case("config that is a YAML list", ["train", f("list.yaml"), "--out", "r"]))
    add(Case("config that is a PNG", ["train", f("grey8.png"), "--out", "r"]))
    add(Case("missing config file", ["train", "nope.yaml", "--out", "r"]))
    add(Case("1e-3 / 1e-5 / 2e-2 in optimizer and schedule (valid)", ["train", f("sci.yaml"), "--out", "r", *tiny],
             expect="ok"))
    add(Case("--set train.optimizer.lr=1e-4 (valid)", ["train", smoke, "--out", "r", *tiny,
                                                        *sets("train.optimizer.lr=1e-4")], expect="ok"))
    add(Case("--set solver.params.eps_init=1e-1 (valid)", ["train", smoke, "--out", "r", *tiny,
                                                            *sets("solver.params.eps_init=1e-1")], expect="ok"))
    add(Case("unknown top-level key", ["train", f("unknown_key.yaml"), "--out", "r", *tiny]))
    add(Case("--set of an unknown key", ["train", smoke, "--out", "r", *tiny, *sets("train.epocs=3")]))
    add(Case("--set without '='", ["train", smoke, "--out", "r", *sets("train.epochs")]))
    add(Case("--set with a bad YAML value", ["train", smoke, "--out", "r", *sets("train.epochs=[3")]))
    add(Case("wrong type: train.epochs=abc", ["train", smoke, "--out", "r", *tiny, *sets("train.epochs=abc")]))
    add(Case("unknown solver name", ["train", smoke, "--out", "r", *tiny, *sets("solver.name=rimm")]))
    add(Case("unknown operator name", ["train", smoke, "--out", "r", *tiny, *sets("operator.name=deblurr")]))
    add(Case("unknown dataset name", ["train", smoke, "--out", "r", *tiny, *sets("data.name=imagenet")]))
    add(Case("unknown solver parameter", ["train", smoke, "--out", "r", *tiny, *sets("solver.params.stepz=3")]))
    add(Case("unknown optimizer", ["train", smoke, "--out", "r", *tiny, *sets("train.optimizer.name=adamw2")]))
    add(Case("image_folder data with a missing folder", ["train", smoke, "--out", "r", *tiny,
                                                          *sets("data.name=image_folder", "data.root=no/such/dir")]))
    add(Case("--out that is an existing file", ["train", smoke, "--out", f("afile"), *tiny]))
    add(Case("read-only output folder (train)", ["train", smoke, "--out", f("locked") + "/run", *tiny], read_only=True))
    add(Case("--resume combined with a config", ["train", smoke, "--resume", f("smoke")]))
    add(Case("--resume combined with another --out", ["train", "--resume", f("smoke"), "--out", "elsewhere"]))
    add(Case("--resume of a missing folder", ["train", "--resume", "runs/nope"]))
    add(Case("--resume of a folder that is not a run", ["train", "--resume", f("emptydir")]))
    add(Case("--resume of a run with corrupt checkpoints", ["train", "--resume", f("corrupt")]))
    add(Case("train.epochs=0", ["train", smoke, "--out", "r", *sets(*TINY[:4], "train.epochs=0")]))
    add(Case("train.epochs=-1", ["train", smoke, "--out", "r", *sets(*TINY[:4], "train.epochs=-1")]))
    add(Case("negative operator.noise_sigma", ["train", smoke, "--out", "r", *tiny, *sets("operator.noise_sigma=-0.1")]))
    add(Case("negative train.time_limit_minutes", ["train", smoke, "--out", "r", *tiny,
                                                   *sets("train.time_limit_minutes=-1")]))
    add(Case("lr=1e6 (diverges)", ["train", smoke, "--out", "r", *sets(*TINY[:4], "train.max_steps=3",
                                                                          "train.optimizer.lr=1e6")]))
    add(Case("negative learning rate", ["train", smoke, "--out", "r", *tiny, *sets("train.optimizer.lr=-0.001")]))
    add(Case("batch_size=100000 with train_length=100000", ["train", smoke, "--out", "r", *sets(
        "data.val_length=2", "data.train_length=100000", "train.batch_size=100000", "train.max_steps=1")],
        timeout=60))
    add(Case("train.batch_size=0", ["train", smoke, "--out", "r", *sets(*TINY[:3], "train.batch_size=0",
                                                                          "train.max_steps=1")]))
    add(Case("data.patch_size=1000 with random projections", ["train", smoke, "--out", "r",
                                                              *sets(*TINY, "data.patch_size=1000")]))
    add(Case("data.patch_size=0", ["train", smoke, "--out", "r", *sets(*TINY, "data.patch_size=0")]))
    add(Case("data.val_length=0", ["train", smoke, "--out", "r", *sets(*TINY, "data.val_length=0")]))
    add(Case("data.train_length=0", ["train", smoke, "--out", "r", *sets(*TINY, "data.train_length=0")]))
    add(Case("solver.params.steps=0", ["train", smoke, "--out", "r", *tiny, *sets("solver.params.steps=0")]))
    add(Case("MRI operator.acceleration=0", ["train", str(CONFIGS / "mri_unet_4x.yaml"), "--out", "r",
                                            *sets(*TINY, "data.patch_size=16", "solver.params.features=4",
                                                  "operator.acceleration=0")]))
    add(Case("Ctrl-C during training", ["train", smoke, "--out", "r", *sets(*TINY[:4], "train.max_steps=100000")],
             interrupt_after=12))

    # --- eval
    add(Case("eval of a missing run folder", ["eval", "runs/nope"]))
    add(Case("eval of a folder that is not a run", ["eval", f("emptydir")]))
    add(Case("eval of a run without config.yaml", ["eval", f("noconfig"), "--out", "e.json"]))
    add(Case("eval of a flow-prior run", ["eval", f("flow"), "--out", "e.json"]))
    add(Case("eval --samples 0", ["eval", f("smoke"), "--samples", "0", "--out", "e.json"]))
    add(Case("eval --samples -1", ["eval", f("smoke"), "--samples", "-1", "--out", "e.json"]))
    add(Case("eval --steps 0", ["eval", f("smoke"), "--steps", "0", "--out", "e.json"]))
    add(Case("eval --out that is a folder", ["eval", f("smoke"), "--out", f("outdir.json")]))
    add(Case("eval --out in a read-only folder", ["eval", f("smoke"), "--out", f("locked") + "/e.json"],
             read_only=True))
    add(Case("eval of corrupt safetensors", ["eval", f("corrupt"), "--out", "e.json"]))

    # --- reconstruct
    add(Case("reconstruct with a flow-prior run", ["reconstruct", f("flow"), f("grey8.png"), "o.png", "--simulate"]))
    add(Case("reconstruct of a missing input", ["reconstruct", f("denoise"), "missing.png", "o.png"]))
    add(Case("reconstruct of a missing run", ["reconstruct", "runs/nope", f("grey8.png"), "o.png"]))
    add(Case("reconstruct of a .txt file", ["reconstruct", f("denoise"), f("notes.txt"), "o.png"]))
    add(Case("reconstruct of an empty .png", ["reconstruct", f("denoise"), f("empty.png"), "o.png"]))
    add(Case("reconstruct of a truncated .png", ["reconstruct", f("denoise"), f("truncated.png"), "o.png"]))
    add(Case("reconstruct of a PNG for a random-projection run (no --simulate)",
             ["reconstruct", f("smoke"), f("grey8.png"), "o.png"]))
    add(Case("reconstruct --simulate of a 64x64 photo for an 8x8 random-projection run",
             ["reconstruct", f("smoke"), f("grey64.png"), "o.png", "--simulate"]))
    add(Case("reconstruct to an output path that is a folder", ["reconstruct", f("denoise"), f("grey8.png"),
                                                                 f("outdir.png")]))
    add(Case("reconstruct to an unsupported output type", ["reconstruct", f("denoise"), f("grey8.png"), "o.xyz"]))
    add(Case("reconstruct to a read-only folder", ["reconstruct", f("denoise"), f("grey8.png"), f("locked") + "/o.png"],
             read_only=True))
    add(Case("reconstruct of an image with NaN", ["reconstruct", f("denoise"), f("nan.tif"), "o.png"]))
    add(Case("reconstruct of an image with Inf", ["reconstruct", f("denoise"), f("inf.tif"), "o.png"]))
    add(Case("reconstruct --simulate of a NIfTI with Inf", ["reconstruct", f("denoise"), f("inf.nii.gz"), "o.nii.gz",
                                                            "--simulate"]))
    add(Case("grey run given an RGB photo (valid, must say so)", ["reconstruct", f("denoise"), f("rgb32.png"), "o.png"],
             expect="ok", notice=r"rgb|colou?r|grey|gray"))
    add(Case("reconstruct of a 4D .npy for a denoising run", ["reconstruct", f("denoise"), f("img4d.npy"), "o.png"]))
    add(Case("CT run given a .npy sinogram of the wrong shape", ["reconstruct", f("ct"), f("wrong_sino.npy"), "o.png"]))
    add(Case("CT run given a sinogram of NaN", ["reconstruct", f("ct"), f("nan_sino.npy"), "o.png"]))
    add(Case("CT run given a PNG without --simulate", ["reconstruct", f("ct"), f("grey64.png"), "o.png"]))
    add(Case("fastMRI .h5 without a kspace dataset", ["reconstruct", "--pretrained", "mri_irim", f("no_kspace.h5"),
                                                      "o.h5"]))
    add(Case(".h5 that is not HDF5", ["reconstruct", "--pretrained", "mri_irim", f("fake.h5"), "o.h5"]))
    add(Case("DICOM that is not DICOM", ["reconstruct", "--pretrained", "mri_irim", f("fake.dcm"), "o.png",
                                         "--simulate"]))
    add(Case("DICOM without pixel data", ["reconstruct", f("denoise"), f("no_pixels.dcm"), "o.nii.gz", "--simulate"]))
    add(Case("DICOM folder holding two series", ["reconstruct", f("denoise"), f("mixed_series"), "o.nii.gz",
                                                  "--simulate"]))
    add(Case("DICOM series with a truncated slice", ["reconstruct", f("denoise"), f("truncated_series"), "o.nii.gz",
                                                      "--simulate"]))
    add(Case("DICOM series written to .png", ["reconstruct", f("denoise"), f("one_slice_series"), "o.png",
                                               "--simulate"]))
    add(Case("DICOM series to .npy (valid, must say what .npy cannot hold)",
             ["reconstruct", f("denoise"), f("one_slice_series"), "o.npy", "--simulate"], expect="ok",
             notice=r"spacing|NIfTI"))
    add(Case("NIfTI that is not NIfTI", ["reconstruct", "--pretrained", "mri_irim", f("fake.nii.gz"), "o.nii.gz",
                                         "--simulate"]))
    add(Case("--pretrained with an unknown name", ["reconstruct", "--pretrained", "mri_irimm", f("grey8.png"), "o.png"]))
    add(Case("--pretrained with a run folder too", ["reconstruct", "--pretrained", "mri_irim", f("smoke"),
                                                    f("grey8.png"), "o.png"]))
    add(Case("reconstruct with only two paths", ["reconstruct", f("denoise"), f("grey8.png")]))
    add(Case("reconstruct with corrupt safetensors", ["reconstruct", f("corrupt"), f("grey8.png"), "o.png",
                                                      "--simulate"]))
    add(Case("reconstruct --sigma -0.1", ["reconstruct", f("denoise"), f("grey8.png"), "o.png", "--sigma", "-0.1"]))
    add(Case("reconstruct --frame 3 of a 2D image", ["reconstruct", f("denoise"), f("grey8.png"), "o.png",
                                                     "--frame", "3"]))

    # --- tour
    add(Case("tour --out in a read-only folder", ["tour", "--out", f("locked") + "/tour", "--size", "32"],
             read_only=True))
    add(Case("tour --out that is a file", ["tour", "--out", f("afile"), "--size", "32"]))
    add(Case("tour --size 0", ["tour", "--out", "t", "--size", "0"]))
    add(Case("tour --size -5", ["tour", "--out", "t", "--size", "-5"]))
    add(Case("tour --size 1000", ["tour", "--out", "t", "--size", "1000"]))

    # --- bench
    add(Case("bench compare --samples 0", ["bench", "compare", f"a={f('smoke')}", "--out", "cmp", "--samples", "0",
                                           "--no-tv"]))
    add(Case("bench compare of a missing run", ["bench", "compare", "a=runs/nope", "--out", "cmp"]))
    add(Case("bench compare without NAME=", ["bench", "compare", f("smoke"), "--out", "cmp", "--no-tv"]))
    add(Case("bench compare of runs of different problems", ["bench", "compare", f"a={f('smoke')}",
                                                            f"b={f('denoise')}", "--out", "cmp", "--no-tv"]))
    add(Case("bench compare of a flow-prior run", ["bench", "compare", f"a={f('flow')}", "--out", "cmp", "--no-tv"]))
    add(Case("bench compare --out that is a folder", ["bench", "compare", f"a={f('smoke')}", "--out", f("emptydir"),
                                                      "--no-tv"]))
    add(Case("bench memory --configs x=missing.yaml", ["bench", "memory", "--configs", "x=missing.yaml"]))
    add(Case("bench memory --configs without NAME=", ["bench", "memory", "--configs", smoke]))
    add(Case("bench curves of a missing run", ["bench", "curves", "a=runs/nope", "--out", "c"]))
    add(Case("bench of an unknown benchmark", ["bench", "memroy"]))

    # --- Python API
    add(api("BrainSlices(size=0)", "from learn2invert.data import BrainSlices\nBrainSlices(size=0)[0]"))
    add(api("BrainSlices(size=-4)", "from learn2invert.data import BrainSlices\nBrainSlices(size=-4)[0]"))
    add(api("BrainSlices(split='bogus')", "from learn2invert.data import BrainSlices\nBrainSlices(split='bogus')"))
    add(api("BrainSlices test index 40 of 24", "from learn2invert.data import BrainSlices\n"
                                               "BrainSlices(split='test', size=32)[40]"))
    add(api("metrics.psnr on a 2-channel complex image", "import torch\nfrom learn2invert import metrics\n"
            "x = torch.rand(1, 2, 16, 16)\nprint(metrics.psnr(x * 0.9, x))"))
    add(api("metrics.psnr with NaN input", "import torch\nfrom learn2invert import metrics\n"
            "x = torch.rand(1, 1, 16, 16)\ny = x.clone()\ny[0, 0, 0, 0] = float('nan')\nprint(metrics.psnr(y, x))"))
    add(api("metrics.psnr of different shapes", "import torch\nfrom learn2invert import metrics\n"
            "print(metrics.psnr(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 8, 8)))"))
    add(api("metrics.ssim of an image smaller than its window", "import torch\nfrom learn2invert import metrics\n"
            "print(metrics.ssim(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4)))"))
    add(api("RandomProjection(m=0)", "from learn2invert import operators\n"
            "operators.RandomProjection(0, 16, 'gaussian', 0)"))
    add(api("RandomProjection applied to the wrong size", "import torch\nfrom learn2invert import operators\n"
            "op = operators.RandomProjection(8, 16, 'gaussian', 0)\nop.A(torch.rand(1, 1, 8, 8))"))
    add(api("SuperResolution(factor=5)", "from learn2invert import operators\noperators.SuperResolution(5)"))
    add(api("GaussianBlur(kernel_size=0)", "from learn2invert import operators\n"
            "operators.GaussianBlur(kernel_size=0, sigma=1.0)"))
    add(api("SingleCoilMRI on a 1-channel image", "import torch\nfrom learn2invert import operators\n"
            "mask = operators.masks.random_mask((16,), acceleration=4, center_fraction=0.08, seed=0)\n"
            "operators.SingleCoilMRI(mask).A(torch.rand(1, 1, 16, 16))"))
    add(api("random_mask(acceleration=0)", "from learn2invert import operators\n"
            "operators.masks.random_mask((16,), acceleration=0, center_fraction=0.08, seed=0)"))
    add(api("ParallelBeamCT(N=0)", "from learn2invert import operators\noperators.ParallelBeamCT(0, 10)"))
    add(api("pretrained.load of an unknown name", "from learn2invert import pretrained\npretrained.load('nope')"))
    add(api("add_gaussian_noise(sigma=-1)", "import torch\nfrom learn2invert import operators\n"
            "print(operators.add_gaussian_noise(torch.zeros(1, 1, 4, 4), sigma=-1.0).std())"))
    add(api("load_solver of a missing run", "from learn2invert.inference import load_solver\nload_solver('runs/nope')"))
    return C


# ------------------------------------------------------------------------------------------ main

def command_line(case: Case) -> str:
    if case.api:
        code = case.argv[1].split("try:\n", 1)[1].split("\nexcept Exception", 1)[0]
        code = "; ".join(line.strip() for line in code.splitlines())
        return f"python -c {shlex.quote(code)}"
    text = "l2i " + " ".join(shlex.quote(a) for a in case.argv)
    return text


def first_line(res: dict) -> str:
    lines = meaningful_lines(res["stderr"])
    if res["killed"]:
        return f"(killed after {res['seconds']:.0f} s) " + (lines[-1] if lines else "")
    if not lines:
        return "(no stderr)" + (f"; stdout: {res['stdout'].strip().splitlines()[-1]}" if res["stdout"].strip() else "")
    if "Traceback" in res["stderr"]:
        return lines[-1]  # the exception line, which is what a traceback says
    return lines[0]


def table(all_cases: list[Case], fx: Path) -> str:
    def cell(text: str) -> str:
        text = text.replace(str(fx), "FX").replace(str(ROOT) + "/", "").replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= 240 else text[:237] + "..."

    rows = ["| # | input | command | class | exit | first line of stderr (last line of a traceback) |",
            "|---:|---|---|---|---:|---|"]
    for i, c in enumerate(all_cases, 1):
        r = c.result
        rows.append(f"| {i} | {cell(c.name)} | `{cell(r['command'])}` | **{r['class']}** | "
                    f"{'killed' if r['killed'] else r['rc']} | {cell(r['first'])} |")
    return "\n".join(rows)


def counts(all_cases: list[Case]) -> dict[str, int]:
    out = {k: 0 for k in ("clear", "ok", "traceback", "silent")}
    for c in all_cases:
        out[c.result["class"]] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bad_inputs.md", help="Markdown table (default: runs/bad_inputs.md)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per case before it is killed (default 30)")
    parser.add_argument("--only", help="run only cases whose name contains this text")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="l2i_bad_inputs_"))
    fx = tmp / "fixtures"
    start = time.time()
    try:
        print(f"fixtures in {fx} ...", flush=True)
        make_fixtures(fx, args.timeout)
        selected = [c for c in cases(fx) if not args.only or args.only.lower() in c.name.lower()]
        for i, case in enumerate(selected, 1):
            cwd = tmp / f"case{i:03d}"
            cwd.mkdir()
            cmd = [PY, *case.argv] if case.api else [L2I, *case.argv]
            res = run(cmd, cwd, case.timeout or args.timeout, read_only=case.read_only,
                      interrupt_after=case.interrupt_after)
            res["class"] = classify(case, res)
            res["command"] = command_line(case)
            res["first"] = first_line(res)
            case.result = res
            print(f"[{i:3d}/{len(selected)}] {res['class']:<9} {res['seconds']:5.1f}s  {case.name}: "
                  f"{res['first'][:150]}", flush=True)
    finally:
        (fx / "locked").chmod(0o755) if (fx / "locked").exists() else None
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    n = counts(selected)
    total = len(selected)
    summary = (f"{total} bad inputs: {n['clear']} clear errors, {n['ok']} valid-looking inputs that work as meant, "
               f"{n['traceback']} tracebacks, {n['silent']} silent (exit 0 on bad input, or killed at the timeout)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# Bad inputs a new user makes, and what they get back\n\n"
        f"Made by `python scripts/bad_inputs.py --out {args.out}` ({(time.time() - start) / 60:.1f} min, "
        f"timeout {args.timeout:.0f} s a case, `OMP_NUM_THREADS=1`). `FX` is the sweep's fixture folder (tiny run folders "
        "and bad files it makes first). Classes: **clear** = nonzero exit, no traceback, at most 3 lines on stderr "
        "(Python API: an exception from learn2invert's own check); **ok** = a valid input that looks wrong and works "
        "as meant (saying so where it converts); **traceback**; **silent** = exit 0 on a bad input, or killed at the "
        "timeout.\n\n"
        f"**{summary}.**\n\n" + table(selected, fx) + "\n")
    print(summary)
    print(f"table: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
