"""Data-parallel training: batch split, per-sample measurements, and a real 2-process gloo job via torchrun."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.utils.data.distributed import DistributedSampler

from learn2invert.train import loop
from learn2invert.train.config import load_config
from learn2invert.train.distributed import DistContext, init_distributed, seed_from
from learn2invert.operators.generator import Measurement

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
# A tiny i-RIM (invertible memory: parameter gradients reach DDP through the engine's re-entrant
# backward) on inpainting with a new random mask per sample, and pixel-subsampled losses: every
# per-sample draw the loop makes is exercised across ranks.
IRIM_TINY = (
    "data.train_length=32", "data.val_length=4", "data.patch_size=8", "train.batch_size=8",
    "operator.name=inpainting", "operator.params={}", "operator.noise_sigma=0.05", "loss.subsample=0.5",
    "solver.name=irim", "solver.params={steps: 2, state_channels: 4, hidden_channels: 4, downsampling: [1, 2], "
    "init: adjoint, memory: invertible}",
)


def test_without_torchrun_training_is_single_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed()
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed) == (0, 1, True, False)
    assert ctx.broadcast({"a": 1}) == {"a": 1} and ctx.all_gather(3) == [3]
    assert torch.equal(ctx.all_reduce_sum(torch.tensor([1.0, 2.0])), torch.tensor([1.0, 2.0]))
    assert DistContext(world_size=2, local_rank=1).device(torch.device("cuda")) == torch.device("cuda", 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK is not set"):
        init_distributed()


def test_rank_batches_together_are_the_single_process_batch():
    """DistributedSampler(drop_last) + per-rank batch B/N: rank k-th batches partition the global k-th batch."""
    length, global_batch, world = 37, 8, 2
    local = global_batch // world
    for epoch in (0, 1):
        single = DistributedSampler(range(length), num_replicas=1, rank=0, seed=5, drop_last=True)
        single.set_epoch(epoch)
        single = list(single)
        ranks = []
        for rank in range(world):
            sampler = DistributedSampler(range(length), num_replicas=world, rank=rank, seed=5, drop_last=True)
            sampler.set_epoch(epoch)
            ranks.append(list(sampler))
        assert len({len(r) // local for r in ranks}) == 1  # every rank runs the same number of steps
        for k in range(length // global_batch):
            split = sorted(i for r in ranks for i in r[k * local:(k + 1) * local])
            assert split == sorted(single[k * global_batch:(k + 1) * global_batch])
    assert list(single) != sorted(single)  # shuffled, and differently per epoch (set_epoch)


@pytest.mark.parametrize("operator", ["mri", "inpainting", "random_projection"])
def test_per_sample_measurements_do_not_depend_on_the_batch_split(operator):
    """What rank 0 draws for samples [0, 1] and rank 1 for [2, 3] is what one process draws for [0..3]."""
    if operator == "mri":
        overrides, shape = ["operator.name=mri", "operator.acceleration=[2, 6]", "operator.noise_sigma=[0.01, 0.1]"], (2, 8, 8)
    elif operator == "inpainting":
        overrides, shape = ["operator.name=inpainting", "operator.params={}"], (1, 8, 8)
    else:
        overrides, shape = [], (1, 8, 8)
    config = load_config(SMOKE, overrides)
    measurement = Measurement(config, shape)
    x = torch.rand(4, *shape)
    indices = [11, 3, 7, 20]
    y, op, sigma = loop.measure(measurement, x, loop.sample_generators(0, 1, indices))
    halves = [loop.measure(measurement, x[s], loop.sample_generators(0, 1, indices[s])) for s in (slice(0, 2), slice(2, 4))]
    assert torch.equal(y, torch.cat([h[0] for h in halves]))
    assert torch.equal(sigma, torch.cat([h[2] for h in halves]))
    # The same physics per sample (a batched matmul may round differently from two halves).
    torch.testing.assert_close(op.A(x), torch.cat([h[1].A(x[s]) for h, s in zip(halves, (slice(0, 2), slice(2, 4)))]))
    # Samples get their own noise (and so do ranks, which hold different samples); epochs differ too.
    noise = y - op.A(x)
    assert not torch.allclose(noise[0], noise[1])
    assert not torch.equal(y, loop.measure(measurement, x, loop.sample_generators(0, 2, indices))[0])


def test_seeds_are_distinct_per_purpose_rank_and_epoch():
    seeds = {seed_from(0, e, p, i) for e in range(3) for p in ("sample", "rank") for i in range(4)}
    assert len(seeds) == 3 * 2 * 4


def _run_torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--monitor-interval=0.1",
           "-m", "learn2invert.cli", "train"] + args
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _assert_close_weights(a_path: Path, b_path: Path) -> None:
    a, b = load_file(str(a_path)), load_file(str(b_path))
    assert a.keys() == b.keys()
    for key in a:
        # Only the order of the float additions in the gradient average differs.
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_torchrun_two_processes_match_one_process_and_resume(tmp_path):
    """2 CPU processes (gloo) with the same global batch reach the weights of 1 process, fresh and resumed.

    Epoch 1 runs fresh under torchrun; epoch 2 resumes it under torchrun (rank 0 reads the
    checkpoint and hands the optimiser state to rank 1). One process runs both epochs in one go.
    """
    torch.set_num_threads(1)
    single = loop.train(SMOKE, tmp_path / "single", overrides=IRIM_TINY + ("train.epochs=2",), show_progress=False)

    sets = [a for kv in IRIM_TINY for a in ("--set", kv)]
    first = _run_torchrun([str(SMOKE), "--out", str(tmp_path / "ddp")] + sets + ["--set", "train.epochs=1"], tmp_path)
    _assert_close_weights(tmp_path / "ddp" / "model.safetensors", tmp_path / "single" / "model.prev.safetensors")
    second = _run_torchrun(["--resume", str(tmp_path / "ddp"), "--set", "train.epochs=2"], tmp_path)
    _assert_close_weights(tmp_path / "ddp" / "model.safetensors", tmp_path / "single" / "model.safetensors")

    history = __import__("json").loads((tmp_path / "ddp" / "history.json").read_text())
    assert [e["epoch"] for e in history] == [1, 2]
    for mine, theirs in zip(history, single["epochs"]):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)  # reduced across ranks
        assert mine["val_psnr"] == pytest.approx(theirs["val_psnr"], abs=1e-3)
    # Only rank 0 writes and prints: one result line per job, one TensorBoard stream per launch.
    assert first.stdout.count("run: ") == 1 and second.stdout.count("run: ") == 1
    assert len(list((tmp_path / "ddp" / "tensorboard").iterdir())) == 2
