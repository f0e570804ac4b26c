"""The step runner behind every ``projects/<paper>/run.py``: trainings and table commands, in order.

A paper's tables are a list of :class:`Step` s run from the repository root: a training (skipped
when its run folder already holds a model, so an interrupted reproduction continues where it
stopped) or a command that writes JSON + Markdown (+ figures) under ``projects/<paper>/results/``.
These are the exact commands the project's README quotes; nothing here computes a number itself.
Every ``run.py`` has the same options::

    python projects/luser2022/run.py --list              # the tables and their steps
    python projects/luser2022/run.py --only table2       # some tables
    python projects/luser2022/run.py                     # all of them
    python projects/luser2022/run.py --dry-run           # print the commands without running them

Trainings use one thread each (``OMP_NUM_THREADS=1``), as the measured tables did. This file is
not part of the installed package: it uses only the ``l2i`` command and the Python interpreter.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Step:
    """One shell command run from the repository root.

    ``done``: a file whose existence means the step ran already (it is then skipped).
    ``record``: ``(JSON file, key)``: after the step, its command and wall time are stored there
    as ``KEY_command`` and ``KEY_wall_s`` (what the RIM Figure-2 table reports per run).
    """

    command: str
    done: str | None = None
    record: tuple[str, str] | None = None


def train(config: str, out: str, *sets: str, record: str | None = None) -> Step:
    """``l2i train CONFIG --out OUT --set ...``, skipped when ``OUT/model.safetensors`` exists."""
    command = " ".join(["l2i", "train", config, "--out", out, *(f"--set {shlex.quote(s)}" for s in sets)])
    return Step(command, done=f"{out}/model.safetensors", record=(f"{out}/wall.json", record) if record else None)


def _env() -> dict:
    # `l2i` and `python` resolve to this interpreter's environment; one thread per job.
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def _record(step: Step, seconds: float) -> None:
    path, key = step.record
    path = ROOT / path
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update({f"{key}_command": f"OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 {step.command}", f"{key}_wall_s": seconds})
    path.write_text(json.dumps(data, indent=2))


def run(tables: dict[str, dict], names: list[str], dry_run: bool = False) -> list[dict]:
    """Run the steps of the named tables in order; returns one record per step (command, status, seconds)."""
    records = []
    for name in names:
        table = tables[name]
        print(f"== {name}: {table['paper']}", flush=True)
        for step in table["steps"]:
            if step.done is not None and (ROOT / step.done).is_file():
                print(f"   skip (done already): {step.command}", flush=True)
                records.append({"table": name, "command": step.command, "status": "skipped"})
                continue
            print(f"   $ {step.command}", flush=True)
            if dry_run:
                continue
            start = time.perf_counter()
            code = subprocess.run(step.command, shell=True, cwd=ROOT, env=_env()).returncode
            seconds = time.perf_counter() - start
            records.append({"table": name, "command": step.command, "status": code, "seconds": seconds})
            if code != 0:
                raise SystemExit(f"step failed with exit code {code}: {step.command}")
            if step.record:
                _record(step, seconds)
    return records


def main(tables: dict[str, dict], description: str, argv: list[str] | None = None) -> int:
    """The command line of a project's ``run.py``: ``--list``, ``--only NAME ...``, ``--dry-run``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--only", nargs="+", choices=list(tables), help="tables to reproduce (default: all)")
    parser.add_argument("--list", action="store_true", help="list the tables and their steps")
    parser.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    args = parser.parse_args(argv)
    names = args.only or list(tables)
    if args.list:
        for name in names:
            print(f"{name}: {tables[name]['paper']}")
            for step in tables[name]["steps"]:
                print(f"    {step.command}")
        return 0
    records = run(tables, names, args.dry_run)
    if not args.dry_run:
        total = sum(r.get("seconds", 0.0) for r in records)
        print(f"done: {len(records)} steps, {total / 60:.1f} min")
    return 0
