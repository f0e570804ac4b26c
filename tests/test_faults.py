"""Fault tolerance of training: killed runs, corrupt checkpoints, pickles, unreadable data, NaN losses."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from learn2invert.cli import main
from learn2invert.data import FastMRISingleCoil, NiftiSlices, SkipBadFiles
from learn2invert.solvers.rim import RIM
from learn2invert import checkpoint
from learn2invert.train import loop
from learn2invert.checkpoint import (CorruptCheckpoint, UnsafeCheckpoint, find_resume_point, load_model,
                                     read_safetensors, read_train_state, save_model)

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
TINY = (
    "data.train_length=16", "data.val_length=4", "data.patch_size=8", "train.batch_size=8",
    "solver.params.steps=2", "solver.params.conv_channels=4", "solver.params.hidden_channels=4",
)


def assert_same_weights(a_dir: Path, b_dir: Path, a_name: str = "model.safetensors", b_name: str = "model.safetensors") -> None:
    a, b = load_file(str(a_dir / a_name)), load_file(str(b_dir / b_name))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    """Uninterrupted tiny runs of 2 and 3 epochs, to compare interrupted ones with."""
    root = tmp_path_factory.mktemp("reference")
    torch.set_num_threads(1)
    for epochs in (2, 3):
        loop.train(SMOKE, root / f"epochs{epochs}", overrides=TINY + (f"train.epochs={epochs}",), show_progress=False)
    return root


# ------------------------------------------------------------------------------- killed runs

KILL_RUN = ("data.train_length=192", "data.val_length=4", "data.patch_size=16", "train.batch_size=8", "train.epochs=3",
            "solver.params.steps=3", "solver.params.conv_channels=8", "solver.params.hidden_channels=8")


def _l2i() -> list[str]:
    script = Path(sys.executable).with_name("l2i")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "learn2invert.cli"]


def test_sigkill_mid_epoch_then_resume_reaches_the_uninterrupted_weights(tmp_path):
    """A real `l2i train` process is SIGKILLed while epoch 2 runs; `--resume` finishes the run exactly."""
    run, log = tmp_path / "killed", tmp_path / "stderr.txt"
    args = _l2i() + ["train", str(SMOKE), "--out", str(run)] + [a for kv in KILL_RUN for a in ("--set", kv)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        # tqdm reports progress on stderr: wait for the first finished batch of epoch 2 (24 batches per epoch).
        in_epoch_2 = re.compile(r"epoch 2/3:[^\r\n]*\|\s*([1-9]\d*)/24")
        deadline = time.monotonic() + 120
        while not in_epoch_2.search(log.read_text()):
            assert proc.poll() is None, f"l2i train ended early:\n{log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "epoch 2 never started"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # Killed mid-epoch 2: the last checkpoint on disk is epoch 1's.
    assert read_train_state(run / "train_state.safetensors")["progress"]["epoch"] == 1

    resumed = loop.train(None, run, resume=True, show_progress=False)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]
    loop.train(SMOKE, tmp_path / "uninterrupted", overrides=KILL_RUN, show_progress=False)
    assert_same_weights(run, tmp_path / "uninterrupted")


@pytest.mark.parametrize("crash_point", ["between the two renames", "after the weights, before the state"])
def test_a_crash_inside_checkpoint_writing_resumes_from_a_matching_pair(tmp_path, monkeypatch, reference_runs, crash_point):
    """Simulate dying at each step of save_checkpoint in epoch 2; resume must redo epoch 2 exactly."""
    class Killed(BaseException):
        pass

    if crash_point == "between the two renames":
        real_replace = os.replace

        def replace(src, dst):
            if Path(dst).name == "train_state.prev.safetensors":
                raise Killed  # model.safetensors is already model.prev.safetensors
            real_replace(src, dst)
        monkeypatch.setattr(checkpoint.os, "replace", replace)
    else:
        real_state, calls = checkpoint.save_train_state, []

        def save_state(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise Killed  # epoch 2's weights are written, its state is not
            return real_state(*args, **kwargs)
        monkeypatch.setattr(checkpoint, "save_train_state", save_state)
    with pytest.raises(Killed):
        loop.train(SMOKE, tmp_path, overrides=TINY + ("train.epochs=2",), show_progress=False)
    monkeypatch.undo()

    point = find_resume_point(tmp_path)
    assert point.state["progress"]["epoch"] == 1
    loop.train(None, tmp_path, resume=True, show_progress=False)
    assert_same_weights(tmp_path, reference_runs / "epochs2")


# -------------------------------------------------------------------------- corrupt checkpoints

def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # inside the last tensor: the header still parses, the checksum does not match
    path.write_bytes(bytes(data))


def _edit_metadata(path: Path) -> None:
    # Rewrite a digit inside the JSON header (the progress record): valid JSON, wrong content.
    data = path.read_bytes()
    at = data.index(b'\\"global_step\\": ') + len(b'\\"global_step\\": ')
    digit = data[at:at + 1]
    path.write_bytes(data[:at] + (b"7" if digit != b"7" else b"8") + data[at + 1:])


@pytest.mark.parametrize("damage, file", [
    (_truncate, "model.safetensors"),
    (_flip_last_byte, "model.safetensors"),
    (_truncate, "train_state.safetensors"),
    (_flip_last_byte, "train_state.safetensors"),
    (_edit_metadata, "train_state.safetensors"),
])
def test_corrupt_latest_checkpoint_is_named_and_resume_falls_back_to_the_previous(tmp_path, reference_runs, damage, file):
    loop.train(SMOKE, tmp_path, overrides=TINY + ("train.epochs=2",), show_progress=False)
    damage(tmp_path / file)
    with pytest.raises(CorruptCheckpoint, match=re.escape(str(tmp_path / file))):
        read_safetensors(tmp_path / file) if file.startswith("model") else read_train_state(tmp_path / file)
    with pytest.warns(RuntimeWarning, match=re.escape(file)):
        resumed = loop.train(None, tmp_path, overrides=("train.epochs=3",), resume=True, show_progress=False)
    # Back to epoch 1's pair, epochs 2 and 3 redone: exactly the uninterrupted 3-epoch run.
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]
    assert_same_weights(tmp_path, reference_runs / "epochs3")
    assert (tmp_path / f"{file}.corrupt").is_file()  # kept aside for inspection


def test_no_usable_checkpoint_names_every_bad_file(tmp_path):
    loop.train(SMOKE, tmp_path, overrides=TINY + ("train.epochs=2",), show_progress=False)
    _truncate(tmp_path / "model.safetensors")
    _flip_last_byte(tmp_path / "model.prev.safetensors")
    with pytest.raises(CorruptCheckpoint) as info:
        loop.train(None, tmp_path, overrides=("train.epochs=3",), resume=True, show_progress=False)
    for name in ("model.safetensors", "model.prev.safetensors"):
        assert str(tmp_path / name) in str(info.value)
    # The CLI reports it as a user error, without a traceback.
    assert main(["train", "--resume", str(tmp_path)]) == 2


def test_load_model_reports_a_corrupt_file_by_name(tmp_path):
    model = RIM(channels=1, steps=2, conv_channels=4, hidden_channels=4, norm="none", output_init="random")
    save_model(model, tmp_path)
    _flip_last_byte(tmp_path / "model.safetensors")
    with pytest.raises(CorruptCheckpoint, match=r"model\.safetensors.*SHA-256"):
        load_model(model, tmp_path)


# ----------------------------------------------------------------------------------- pickles

@pytest.mark.parametrize("zip_format", [True, False])
def test_pickled_checkpoints_are_refused_unless_explicitly_allowed(tmp_path, monkeypatch, zip_format):
    torch.manual_seed(1)
    source = RIM(channels=1, steps=2, conv_channels=4, hidden_channels=4, norm="none", output_init="random")
    target = RIM(channels=1, steps=2, conv_channels=4, hidden_channels=4, norm="none", output_init="random")
    pt = tmp_path / "weights.pt"
    torch.save(source.state_dict(), pt, _use_new_zipfile_serialization=zip_format)
    disguised = tmp_path / "run" / "model.safetensors"  # a pickle under the safetensors name
    disguised.parent.mkdir()
    disguised.write_bytes(pt.read_bytes())

    real_load = torch.load

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load must not be called without allow_pickle")
    monkeypatch.setattr(torch, "load", no_unpickling)
    for path in (pt, disguised.parent, disguised):
        with pytest.raises(UnsafeCheckpoint, match="pickle.*allow_pickle=True"):
            load_model(target, path)
    monkeypatch.setattr(torch, "load", real_load)

    load_model(target, pt, allow_pickle=True)  # explicit opt-in: torch.load(weights_only=True)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_a_pickled_training_state_is_refused_on_resume(tmp_path):
    loop.train(SMOKE, tmp_path, overrides=TINY + ("train.epochs=1",), show_progress=False)
    torch.save({"optimizer": {}}, tmp_path / "train_state.safetensors")
    with pytest.raises(CorruptCheckpoint, match=r"train_state\.safetensors is a pickle"):
        loop.train(None, tmp_path, overrides=("train.epochs=2",), resume=True, show_progress=False)


# -------------------------------------------------------------------------------------- data

def _image_folder(root: Path, good: int = 5) -> Path:
    from skimage.io import imsave

    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(good):
        imsave(root / f"img{i}.png", (rng.random((12, 12)) * 255).astype(np.uint8), check_contrast=False)
    bad = root / "img_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    return bad


def test_corrupt_png_is_reported_by_path_or_skipped_and_counted(tmp_path):
    bad = _image_folder(tmp_path / "images")
    data = ("data.name=image_folder", f"data.root={tmp_path / 'images'}", "data.patch_size=8", "data.data_range=1.0",
            "train.batch_size=2", "train.val_batch_size=2", "solver.params.steps=2", "solver.params.conv_channels=4",
            "solver.params.hidden_channels=4", "operator.name=denoising", "operator.params={}", "operator.noise_sigma=0.1")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        loop.train(SMOKE, tmp_path / "strict", overrides=data, show_progress=False)

    with pytest.warns(RuntimeWarning, match=re.escape(str(bad))):
        result = loop.train(SMOKE, tmp_path / "lenient", overrides=data + ("data.skip_bad_files=true",),
                            show_progress=False)
    assert [e["skipped_files"] for e in result["epochs"]] == [1, 1]
    assert all(np.isfinite(e["train_loss"]) for e in result["epochs"])


def test_skip_bad_files_wrapper_replaces_items_deterministically():
    class Flaky(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            if i in (1, 3):
                raise ValueError(f"/data/file{i}.png: could not read")
            return torch.tensor(i)

    data = SkipBadFiles(Flaky())
    with pytest.warns(RuntimeWarning):
        assert [int(data[i]) for i in range(4)] == [0, 2, 2, 0]  # the next readable item, wrapping round
    assert data.skipped == ["/data/file1.png: could not read", "/data/file3.png: could not read"]

    class Broken(Flaky):
        def __getitem__(self, i):
            raise ValueError(f"/data/file{i}.png: could not read")
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="none of the 4 items"):
        SkipBadFiles(Broken())[0]


def test_corrupt_hdf5_and_nifti_files_are_named_or_skipped(tmp_path):
    import nibabel as nib

    h5_dir, nii_dir = tmp_path / "h5", tmp_path / "nii"
    h5_dir.mkdir(), nii_dir.mkdir()
    with h5py.File(h5_dir / "good.h5", "w") as f:
        f["kspace"] = (np.ones((2, 8, 8)) + 1j).astype(np.complex64)
        f["reconstruction_esc"] = np.ones((2, 4, 4), np.float32)
    (h5_dir / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 40)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.float32), np.eye(4)), str(nii_dir / "good.nii"))
    (nii_dir / "bad.nii").write_bytes(b"garbage" * 10)

    for cls, folder, slices in ((FastMRISingleCoil, h5_dir, 2), (NiftiSlices, nii_dir, 3)):
        with pytest.raises(ValueError, match=re.escape(str(folder / f"bad.{'h5' if folder == h5_dir else 'nii'}"))):
            cls(folder)
        with pytest.warns(RuntimeWarning, match="bad"):
            data = cls(folder, skip_bad_files=True)
        assert len(data) == slices and [p.name for p, _ in data.skipped] == [f"bad.{'h5' if folder == h5_dir else 'nii'}"]


# --------------------------------------------------------------------------------------- NaN

def test_nan_loss_stops_with_the_step_named_and_the_last_good_checkpoint_untouched(tmp_path, monkeypatch, reference_runs,
                                                                                   capsys):
    calls = {"n": 0}
    real = loop.iterate_loss

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("inf") if calls["n"] == 4 else loss  # 2 batches per epoch: epoch 2, batch 2

    monkeypatch.setattr(loop, "iterate_loss", poisoned)
    code = main(["train", str(SMOKE), "--out", str(tmp_path)] + [a for kv in TINY + ("train.epochs=3",)
                                                                  for a in ("--set", kv)])
    assert code == 3
    assert "loss is inf at epoch 2, batch 2 (global step 4)" in capsys.readouterr().err
    # Epoch 1's checkpoint stays as it was: the same weights as epoch 1 of an uninterrupted run.
    assert read_train_state(tmp_path / "train_state.safetensors")["progress"]["epoch"] == 1
    assert_same_weights(tmp_path, reference_runs / "epochs2", b_name="model.prev.safetensors")  # its epoch 1
