"""The training loop behind ``l2i train``, on one process or many (``torchrun``).

Reproducibility: every random draw of training is a pure function of the config's ``seed``, the
epoch and, where it concerns one sample, that sample's dataset index:

- the order of the samples: a ``DistributedSampler`` seeded by ``(seed, epoch)`` (``set_epoch``);
- the crops and augmentations: the datasets seed each item by ``(seed, epoch, index)``;
- the measurement of a sample (operator physics such as MRI masks, noise level, noise) and its
  loss pixel mask: a generator seeded by ``(seed, epoch, index)`` (:func:`sample_generators`);
- the operator of a batch of an operator mixture with ``operator.per: batch``: a generator
  seeded by ``(seed, epoch, global batch index)`` (:func:`batch_generator`).

So an epoch can be repeated exactly: a run killed mid-epoch resumes with ``--resume`` from the
last finished epoch and redoes the epoch it lost. And it does not matter how a batch is split
across processes: under ``torchrun`` each rank trains on its share of the global batch
(``train.batch_size``), its samples get their own noise, and DistributedDataParallel averages the
gradients, so N processes reach the weights one process reaches, up to float rounding.

After every epoch rank 0 validates, then writes the weights and the training state (see
:mod:`learn2invert.checkpoint`: atomic, checksummed, the previous pair kept). Only rank 0 reads or
writes the run folder; the other ranks get the config and the training state from it over the
process group.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from ..data.items import item_shape, split_item
from ..data.skipping import SkipBadFiles
from ..outputs import check_output_folder
from ..checkpoint import (BEST_FILE, CONFIG_FILE, adopt_resume_point, apply_train_state, atomic_write_text,
                          find_resume_point, has_checkpoint, load_model, peak_lr, remove_stale_temporaries,
                          save_checkpoint, save_model, weights_file)
from .config import ConfigError, dump_config, init_weights_folder, load_config
from .distributed import DistContext, init_distributed, seed_from
from .datasets import build_dataset, empty_validation_message
from .experiment import build_optimizer, build_solver, PER_STEP_SCHEDULES, without_initial_weights
from ..operators.generator import Measurement, measure
from .losses import iterate_loss, pixel_subsample_mask
from .memory_check import check_batch_fits
from .precision import CompiledOrEager, autocast, check_precision, grad_scaler
from .validate import validate

HISTORY_FILE = "history.json"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("config asks for train.device=cuda but no CUDA device is available")
    return torch.device(name)


def _summary_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra; training works without it
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


# ------------------------------------------------------------------------ per-sample measurement

class _Skipping(torch.utils.data.Sampler):
    """The indices of ``sampler`` without its first ``skip`` (a run resumed in the middle of an epoch)."""

    def __init__(self, sampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        return iter(list(self.sampler)[self.skip:])

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


class _Indexed(Dataset):
    """Items as ``(index, item)``, so a batch knows which samples it holds."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return index, self.dataset[index]


def sample_generators(seed: int, epoch: int, indices) -> list[torch.Generator]:
    """One CPU generator per sample, seeded by ``(seed, epoch, dataset index)``."""
    return [torch.Generator().manual_seed(seed_from(seed, epoch, "sample", int(i))) for i in indices]


def batch_generator(seed: int, epoch: int, batch_index: int) -> torch.Generator:
    """The generator of a whole batch, seeded by ``(seed, epoch, global batch index)``: it draws the
    operator of an operator mixture with ``per: batch`` (the same on every process)."""
    return torch.Generator().manual_seed(seed_from(seed, epoch, "batch", int(batch_index)))


def _scored(iterates: list[torch.Tensor], x: torch.Tensor, loss_cfg: dict, generators: list[torch.Generator]):
    """Apply ``loss.subsample`` with one pixel mask per sample (drawn from that sample's generator)."""
    fraction = loss_cfg["subsample"]
    if not fraction:
        return iterates, x
    if loss_cfg["name"] == "ssim":
        raise ValueError("loss.subsample does not apply to the SSIM loss")
    mask = torch.cat([pixel_subsample_mask(x[k:k + 1], fraction, g) for k, g in enumerate(generators)])
    return [it * mask for it in iterates], x * mask


# ---------------------------------------------------------------------------------- set-up

LOCK_FILE = ".lock"
_HELD_LOCKS: dict[Path, object] = {}  # run folder -> open, flock-ed lock file of this process


def _lock_run_folder(run_dir: Path) -> None:
    """Take an exclusive lock on ``run_dir`` for this process (released by :func:`_unlock_run_folder`
    or when the process dies); a second training into the same folder fails at once, naming the pid."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no lock
        return
    handle = open(run_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ValueError(f"{run_dir} is in use by another training (pid {holder}); wait for it to finish or choose "
                         "another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _HELD_LOCKS[run_dir.resolve()] = handle


def _unlock_run_folder(run_dir: Path) -> None:
    handle = _HELD_LOCKS.pop(run_dir.resolve(), None)
    if handle is not None:
        handle.close()  # closing the file releases the flock


def _prepare_run(config_path, run_dir: Path, overrides: tuple[str, ...], resume: bool):
    """Rank 0's look at the run folder: returns ``(config, resume point or None)``; locks the folder."""
    if run_dir.is_dir() or not resume:
        # A file where the folder should be, or a read-only parent: one line now, not a traceback.
        check_output_folder(run_dir, "run folder")
        _lock_run_folder(run_dir)
    try:
        return _check_run_folder(config_path, run_dir, overrides, resume)
    except BaseException:
        _unlock_run_folder(run_dir)
        raise


def _check_run_folder(config_path, run_dir: Path, overrides: tuple[str, ...], resume: bool):
    if resume:
        point = find_resume_point(run_dir)  # raises, naming the files, if nothing verifies
        if not (run_dir / CONFIG_FILE).is_file():
            raise ValueError(f"cannot resume: {run_dir / CONFIG_FILE} does not exist")
        config = load_config(run_dir / CONFIG_FILE, overrides, saved=True)
        adopt_resume_point(run_dir, point)
        remove_stale_temporaries(run_dir)
        return config, point
    config = load_config(config_path, overrides)
    if has_checkpoint(run_dir):
        raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    return config, None


def _shared_setup(ctx: DistContext, config_path, run_dir: Path, overrides, resume: bool):
    """Run :func:`_prepare_run` on rank 0 and hand its config (or its error) to every rank."""
    config = point = error = None
    if ctx.is_main:
        try:
            config, point = _prepare_run(config_path, run_dir, overrides, resume)
        except Exception as err:  # noqa: BLE001 - re-raised below, on every rank
            error = err
    error, config = ctx.broadcast((error, config))
    if error is not None:
        raise error
    return config, point


def train(config_path: str | Path | None, out: str | Path, overrides: tuple[str, ...] = (), resume: bool = False,
          show_progress: bool = True) -> dict:
    """Train the solver of a config; returns ``{"run_dir", "epochs": [...per-epoch records...], "rank", "world_size"}``.

    Runs data-parallel when started by ``torchrun`` (see :mod:`.distributed`), on one process
    otherwise.

    Args:
        config_path: YAML config (ignored with ``resume``: the run's saved config is used).
        out: run folder (created); holds config.yaml, model.safetensors, train_state.safetensors
            (plus the previous pair as ``*.prev.safetensors``), history.json and TensorBoard events.
        overrides: ``key=value`` strings applied on top of the config (dotted keys).
        resume: continue the run in ``out`` from its last finished epoch (falling back to the
            previous checkpoint, with a warning, if the latest one is corrupt).
        show_progress: progress bars and per-epoch lines (rank 0 only).

    Raises:
        TrainingDiverged: the loss became NaN or infinite (the message names epoch, batch and step).
        ValueError: a bad config or run folder, unreadable data, a corrupt checkpoint.
    """
    ctx = init_distributed()
    run_dir = Path(out)
    created, failed = not run_dir.exists(), False
    try:
        return _train(ctx, config_path, run_dir, tuple(overrides), resume, show_progress and ctx.is_main)
    except Exception:
        failed = True
        raise
    finally:
        _unlock_run_folder(run_dir)
        if failed and created and ctx.is_main:
            _remove_run_without_weights(run_dir)
        ctx.close()


def _remove_run_without_weights(run_dir: Path) -> None:
    """Delete a run folder this call created when it failed before writing any weights (a bad
    config, unreadable data): the next try with the same ``--out`` then starts clean."""
    import shutil

    if run_dir.is_dir() and not any(run_dir.glob("*.safetensors")):
        shutil.rmtree(run_dir, ignore_errors=True)


def _train(ctx: DistContext, config_path, run_dir: Path, overrides: tuple[str, ...], resume: bool,
           show_progress: bool) -> dict:
    config, point = _shared_setup(ctx, config_path, run_dir, overrides, resume)
    train_cfg, loss_cfg, seed = config["train"], config["loss"], config["seed"]
    precision = check_precision(train_cfg["precision"])
    batch_size = train_cfg["batch_size"]
    if batch_size % ctx.world_size:
        raise ValueError(f"train.batch_size={batch_size} is the global batch and must be a multiple of the "
                         f"number of processes ({ctx.world_size})")

    torch.manual_seed(seed)  # the same initial weights on every rank
    device = ctx.device(resolve_device(train_cfg["device"]))
    if loss_cfg["name"] == "bits_per_dim":  # a flow prior trained by likelihood: no measurements
        if ctx.is_distributed:
            raise ValueError("loss.name=bits_per_dim (likelihood training of a flow) runs on one process; "
                             "start it without torchrun")
        from .density import train_density

        result = train_density(config, run_dir, device, point is not None, show_progress, HISTORY_FILE, CONFIG_FILE)
        return {**result, "rank": 0, "world_size": 1}
    train_set = build_dataset(config, "train")
    val_set = build_dataset(config, "val") if ctx.is_main else None
    # Every validation scores the whole set: an empty one would fail only after the first epoch.
    empty = ctx.broadcast(empty_validation_message(config, val_set) if ctx.is_main else None)
    if empty:
        raise ConfigError(empty)
    if config["data"]["skip_bad_files"]:
        train_set = SkipBadFiles(train_set)
        val_set = SkipBadFiles(val_set) if val_set is not None else None
    if len(train_set) < batch_size:
        raise ValueError(f"the training set has {len(train_set)} samples, fewer than train.batch_size={batch_size}")
    image_shape = item_shape(train_set[0])  # items may carry their own k-space (data.params.own_coils)
    measurement = Measurement(config, image_shape)
    solver = build_solver(config if point is None else without_initial_weights(config), image_shape).to(device)
    local_batch = batch_size // ctx.world_size
    # A batch that cannot fit is refused now, with numbers, instead of being killed by the kernel later.
    check_batch_fits(solver, train_set[0], measurement, local_batch, device)
    steps_per_epoch = (len(train_set) // ctx.world_size) // local_batch
    epochs, max_steps, val_every, patience = (train_cfg[k] for k in ("epochs", "max_steps", "val_every", "patience"))
    # Negative counts are refused when the config is read; zero epochs mean something only with max_steps.
    if epochs == 0 and not max_steps:
        raise ValueError("config key 'train.epochs' must be positive (or set train.max_steps), got 0")
    total_steps = max_steps or epochs * steps_per_epoch
    optimizer, scheduler = build_optimizer(config, solver, total_steps)
    per_step_schedule = config["train"]["schedule"].get("name") in PER_STEP_SCHEDULES
    scaler = grad_scaler(precision, device)

    history: list[dict] = []
    # Where training stands: the epoch in progress and how many of its batches are done, plus the
    # early-stopping state (lowest validation loss, its step, validations since it).
    start_epoch, start_batch, global_step = 0, 0, 0
    best = {"loss": math.inf, "step": 0, "waited": 0}
    if point is None and train_cfg["init_weights"]:  # fine-tuning; every rank reads the same file
        load_model(solver, weights_file(init_weights_folder(train_cfg["init_weights"]), "best"), new_zero_ok=True)
    if point is not None:  # rank 0 read it; the weights reach the other ranks through DDP's initial broadcast
        try:
            solver.load_state_dict(point.model, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{point.model_path} does not fit the solver of the config: {err}") from err
    saved_state = ctx.broadcast(point.state if point is not None else None)
    if saved_state is not None:
        saved_peak = peak_lr(saved_state["optimizer"]["param_groups"][0])
        progress = apply_train_state(saved_state, optimizer, scheduler, scaler)
        peak = peak_lr(optimizer.param_groups[0])
        if show_progress and peak != saved_peak:
            tqdm.write(f"resuming at a peak learning rate of {peak:g} (train.optimizer.lr; the run had {saved_peak:g})")
        start_epoch, global_step, history = progress["epoch"], progress["global_step"], progress["history"]
        start_batch = progress.get("batch", 0)
        best = progress.get("best", best)
    if ctx.is_main:
        atomic_write_text(run_dir / CONFIG_FILE, dump_config(config))

    model: torch.nn.Module = solver
    if ctx.is_distributed:
        # Gradients are averaged across ranks during backward (the invertible engine hands its
        # parameter gradients to autograd, so DDP's hooks see them like any other).
        model = DistributedDataParallel(solver, device_ids=[device.index] if device.type == "cuda" else None)
    step_model = CompiledOrEager(model) if train_cfg["compile"] else model

    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed,
                                 drop_last=True)
    writer = _summary_writer(run_dir) if ctx.is_main else None
    budget = 60.0 * train_cfg["time_limit_minutes"]
    run_started = time.perf_counter()
    stopped_by = "max_steps" if max_steps else "epochs"
    epoch = start_epoch
    while global_step < total_steps and stopped_by in ("max_steps", "epochs"):
        torch.manual_seed(seed_from(seed, epoch, "rank", ctx.rank))  # whatever a model draws (dropout) differs per rank
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        # A run resumed mid-epoch skips the batches it already trained on (the order is fixed by the seed).
        skip = start_batch if epoch == start_epoch else 0
        loader = DataLoader(_Indexed(train_set), batch_size=local_batch, sampler=_Skipping(sampler, skip * local_batch),
                            drop_last=True)
        solver.train()
        label = f"step {global_step}/{total_steps}" if max_steps else f"epoch {epoch + 1}/{epochs}"
        bar = tqdm(loader, desc=label, disable=not show_progress, unit="batch")
        started, seen, running, steps = time.perf_counter(), 0, 0.0, 0
        fp_sums: dict[str, float] = {}
        for batch_index, (indices, item) in enumerate(bar, start=skip):
            x, kspace = split_item(item)
            x, kspace = x.to(device), kspace.to(device) if kspace is not None else None
            generators = sample_generators(seed, epoch, indices.tolist())
            y, op, sigma = measure(measurement, x, generators, batch_generator(seed, epoch, batch_index), kspace=kspace)
            with autocast(precision, device):
                iterates = step_model(y, op, sigma=sigma)
            iterates, target = _scored([it.float() for it in iterates], x, loss_cfg, generators)
            loss = iterate_loss(iterates, target, loss_cfg["name"], loss_cfg["weights"])
            # One collective per step: the global mean loss, and whether any rank ran out of time.
            timed_out = bool(budget) and time.perf_counter() - run_started > budget
            totals = ctx.all_reduce_sum(torch.stack([loss.detach().float(), loss.new_tensor(float(timed_out))]))
            global_loss = totals[0].item() / ctx.world_size
            if not math.isfinite(global_loss):
                raise TrainingDiverged(
                    f"loss is {global_loss} at epoch {epoch + 1}, batch {batch_index + 1} (global step {global_step + 1}); "
                    f"training stopped, the last good checkpoint in {run_dir} is kept")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if train_cfg["grad_clip"] > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(solver.parameters(), train_cfg["grad_clip"])
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None and per_step_schedule:
                scheduler.step()
            global_step += 1
            steps += 1
            seen += batch_size
            running += global_loss
            # Equilibrium solvers report their fixed-point solves (mean iterations, residuals).
            fixed_point = solver.diagnostics()
            for k, v in fixed_point.items():
                fp_sums[k] = fp_sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{global_loss:.4g}", img_s=f"{seen / (time.perf_counter() - started):.1f}",
                            step=global_step, **{k: f"{v:.3g}" for k, v in fixed_point.items() if k != "fp_residual_max"})
            if writer is not None and global_step % train_cfg["log_every"] == 0:
                writer.add_scalar("train/loss", global_loss, global_step)
                if scheduler is not None:
                    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], global_step)
                for k, v in fixed_point.items():
                    writer.add_scalar(f"train/{k}", v, global_step)
            if totals[1].item() > 0:
                stopped_by = "time_limit"  # end here: validate, save, stop
            epoch_done = batch_index + 1 == steps_per_epoch
            if epoch_done and scheduler is not None and not per_step_schedule:
                scheduler.step()
            if not (stopped_by == "time_limit" or global_step >= total_steps or (val_every and global_step % val_every == 0)
                    or (epoch_done and not val_every)):
                continue
            # Validate, keep the best weights, checkpoint (the resume point is the next batch).
            metrics = validate(solver, val_set, measurement, config, device) if ctx.is_main else None
            metrics = ctx.broadcast(metrics)
            improved = metrics["loss"] < best["loss"]
            best = ({"loss": metrics["loss"], "step": global_step, "waited": 0} if improved
                    else {**best, "waited": best["waited"] + 1})
            if patience and best["waited"] >= patience and stopped_by != "time_limit":
                stopped_by = "patience"
            record = {"epoch": epoch + 1, "global_step": global_step, "train_loss": running / max(1, steps),
                      "stopped_early": stopped_by in ("time_limit", "patience"), "best_step": best["step"],
                      "seconds": time.perf_counter() - started, **{f"val_{k}": v for k, v in metrics.items()},
                      **{f"train_{k}": v / max(1, steps) for k, v in fp_sums.items()}}
            if config["data"]["skip_bad_files"]:
                record["skipped_files"] = _count_skipped(ctx, train_set, val_set, show_progress)
            history.append(record)
            started, seen, running, steps, fp_sums = time.perf_counter(), 0, 0.0, 0, {}
            if ctx.is_main:
                _log_epoch(writer, record, metrics, global_step, show_progress)
                if improved:
                    save_model(solver, run_dir, {"global_step": str(global_step), "val_loss": repr(metrics["loss"])},
                               name=BEST_FILE)
                resume_at = {"epoch": epoch + 1, "batch": 0} if epoch_done else {"epoch": epoch, "batch": batch_index + 1}
                save_checkpoint(run_dir, solver, optimizer, scheduler,
                                {**resume_at, "global_step": global_step, "history": history, "best": best}, scaler)
                atomic_write_text(run_dir / HISTORY_FILE, json.dumps(history, indent=2))
            if stopped_by in ("time_limit", "patience") or global_step >= total_steps:
                break
        if show_progress and stopped_by == "time_limit":
            tqdm.write(f"time limit of {train_cfg['time_limit_minutes']} min reached at global step {global_step}; "
                       "training stopped")
        if show_progress and stopped_by == "patience":
            tqdm.write(f"early stopping at global step {global_step}: no lower validation loss in {patience} "
                       f"validations; best weights (step {best['step']}) are in {run_dir / BEST_FILE}")
        epoch += 1
    if writer is not None:
        writer.close()
    warning = validation_warning(history, run_dir, best["step"])
    if warning and ctx.is_main:
        warnings.warn(warning, DivergenceWarning, stacklevel=3)
    ctx.barrier()
    return {"run_dir": str(run_dir), "epochs": history, "rank": ctx.rank, "world_size": ctx.world_size,
            "stopped_by": stopped_by, "best_step": best["step"], "warning": warning}


# How far (dB) the last validation PSNR may fall below the run's best before training is said to
# have gone wrong. Validation PSNR wobbles by a dB or two between validations; a fall of 10 dB is
# an error ten times the best one's, not noise.
DIVERGENCE_DROP_DB = 10.0


class DivergenceWarning(RuntimeWarning):
    """Training finished, but its last validation says the model got much worse (see :func:`validation_warning`)."""


def validation_warning(history: list[dict], run_dir: Path | str, best_step: int = 0) -> str | None:
    """One line on a run whose validation went bad, or None. Looked at once, after training, so a
    single bad validation in the middle stops nothing.

    The last validation is bad when its loss or PSNR is NaN or infinite, when its PSNR is below
    0 dB (an error larger than the peak: worse than returning an all-black image), or when its
    PSNR is more than :data:`DIVERGENCE_DROP_DB` below the best validation PSNR of the run.
    ``best_step`` is the step of the weights in ``best.safetensors`` (lowest validation loss).
    """
    scored = [r for r in history if "val_psnr" in r]
    if not scored:
        return None
    last = scored[-1]
    psnr, loss = last["val_psnr"], last.get("val_loss", 0.0)
    finite = [r["val_psnr"] for r in scored if math.isfinite(r["val_psnr"])]
    where = f"the last validation (step {last['global_step']})"
    advice = "try a lower train.optimizer.lr or set train.grad_clip"
    if best_step and best_step != last["global_step"]:
        advice += f"; the weights of the lowest validation loss (step {best_step}) are in {Path(run_dir) / BEST_FILE}"
    if not (math.isfinite(loss) and math.isfinite(psnr)):
        return f"{where} has loss {loss} and PSNR {psnr}: training diverged; {advice}"
    if psnr < 0:
        return (f"{where} has PSNR {psnr:.2f} dB, below 0 dB: the estimates are worse than an all-black image "
                f"(training diverged, or has barely started); {advice}")
    if psnr < max(finite) - DIVERGENCE_DROP_DB:
        return (f"{where} has PSNR {psnr:.2f} dB, {max(finite) - psnr:.1f} dB below the run's best "
                f"({max(finite):.2f} dB): training diverged; {advice}")
    return None


def _count_skipped(ctx: DistContext, train_set: SkipBadFiles, val_set: SkipBadFiles | None, show_progress: bool) -> int:
    """Unreadable items skipped so far on any rank (``data.skip_bad_files``); rank 0 warns with their files."""
    mine = set(train_set.skipped) | (set(val_set.skipped) if val_set is not None else set())
    everyone = set().union(*ctx.all_gather(mine))
    if everyone and ctx.is_main:
        warnings.warn(f"data.skip_bad_files: {len(everyone)} unreadable item(s) skipped so far: "
                      + "; ".join(sorted(everyone)), RuntimeWarning, stacklevel=2)
    return len(everyone)


def _log_epoch(writer, record: dict, metrics: dict, global_step: int, show_progress: bool) -> None:
    if writer is not None:
        for k, v in metrics.items():
            writer.add_scalar(f"val/{k}", v, global_step)
        writer.flush()
    if show_progress:
        fixed_point = "".join(f", {k[6:]} {v:.3g}" for k, v in record.items() if k.startswith("train_fp_"))
        tqdm.write(f"epoch {record['epoch']}, step {record['global_step']}: train loss {record['train_loss']:.4g}{fixed_point}, "
                   + ", ".join(f"val {k} {v:.4f}" for k, v in metrics.items()))


__all__ = ["train", "TrainingDiverged", "resolve_device", "sample_generators", "batch_generator", "DivergenceWarning",
           "validation_warning"]
