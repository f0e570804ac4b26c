"""projects/<paper>/: every paper's run script names files that exist, its README quotes its
commands, the shared step runner skips and records steps, and `l2i bench` points to the moved
paper benchmarks."""
import json
import re
import shlex
from pathlib import Path

import pytest

from learn2invert.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ("rim2017", "irim2019", "flow_unfolding2021", "luser2022")


def _paths(command: str) -> list[str]:
    """Repository files a command names: configs, scripts (also inside LABEL=CONFIG[:...] arguments)."""
    words = [w.split("=", 1)[-1].split(":", 1)[0] for w in shlex.split(command)]
    return [w for w in words if w.endswith((".yaml", ".py")) and "/" in w]


@pytest.mark.parametrize("paper", PAPERS)
def test_every_step_names_files_that_exist_and_writes_into_its_project(paper, project):
    tables = project(paper, "run").TABLES
    assert tables
    for table in tables.values():
        assert table["paper"] and table["steps"]
        for step in table["steps"]:
            for path in _paths(step.command):
                assert (ROOT / path).is_file(), (paper, path)
            for out in re.findall(r"--(?:out|json) (\S+)", step.command):
                assert out.startswith(("runs/", f"projects/{paper}/results")), (paper, out)


@pytest.mark.parametrize("paper", PAPERS)
def test_readme_quotes_the_run_script_and_links_files_that_exist(paper):
    readme = (ROOT / "projects" / paper / "README.md").read_text()
    assert f"python projects/{paper}/run.py" in readme
    for link in re.findall(r"\]\(([^)#]+)\)", readme):
        if not link.startswith("http"):
            assert (ROOT / "projects" / paper / link).resolve().exists(), (paper, link)


@pytest.mark.parametrize("paper", PAPERS)
def test_list_and_dry_run_print_the_steps_without_running_them(paper, project, capsys, monkeypatch):
    run = project(paper, "run")
    reproduce = project(paper, "reproduce")
    monkeypatch.setattr(reproduce.subprocess, "run", lambda *a, **k: pytest.fail("a dry run ran a command"))
    first = next(iter(run.TABLES))
    assert reproduce.main(run.TABLES, "test", ["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(step.command in listed for table in run.TABLES.values() for step in table["steps"])
    assert reproduce.main(run.TABLES, "test", ["--only", first, "--dry-run"]) == 0
    assert f"== {first}:" in capsys.readouterr().out


def test_the_runner_skips_done_steps_stops_on_failure_and_records_wall_times(project, tmp_path, monkeypatch):
    reproduce = project("rim2017", "reproduce")
    monkeypatch.setattr(reproduce, "ROOT", tmp_path)
    (tmp_path / "done.txt").write_text("")
    tables = {"t": {"paper": "a test table", "steps": [
        reproduce.Step("exit 7", done="done.txt"),  # skipped: it would fail
        reproduce.Step("echo hi > out.txt", record=("wall.json", "train"))]}}
    records = reproduce.run(tables, ["t"])
    assert [r["status"] for r in records] == ["skipped", 0]
    assert (tmp_path / "out.txt").read_text() == "hi\n"
    wall = json.loads((tmp_path / "wall.json").read_text())
    assert wall["train_command"].endswith("echo hi > out.txt") and wall["train_wall_s"] >= 0
    with pytest.raises(SystemExit, match="exit code 7"):
        reproduce.run({"t": {"paper": "", "steps": [reproduce.Step("exit 7")]}}, ["t"])


def test_train_steps_are_skipped_once_the_run_holds_a_model(project):
    step = project("rim2017", "reproduce").train("c.yaml", "runs/x", "a.b=1", "c={d: 2}")
    assert step.command == "l2i train c.yaml --out runs/x --set a.b=1 --set 'c={d: 2}'"
    assert step.done == "runs/x/model.safetensors" and step.record is None


@pytest.mark.parametrize("name", ["superres", "flows", "luser", "quality"])
def test_l2i_bench_points_to_the_project_of_a_moved_paper_benchmark(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", name])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "moved out of the package" in err and "projects/" in err


def test_the_package_ships_no_paper_reproduction():
    bench = ROOT / "src" / "learn2invert" / "bench"
    assert not [p.name for p in bench.glob("*.py") if p.stem in ("rim_figure2", "rim_denoising", "rim_superres",
                                                                  "flow_tables", "luser_tables", "quality")]
