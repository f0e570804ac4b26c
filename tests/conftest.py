import importlib
import importlib.util
from pathlib import Path

import pytest
import torch

# The tests run many tiny tensor operations, and `make test` runs two xdist workers on two cores:
# one intra-op thread per process avoids oversubscription and synchronisation overhead.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


PROJECTS = Path(__file__).resolve().parents[1] / "projects"


@pytest.fixture
def project(monkeypatch):
    """``project(paper, name)`` imports ``projects/<paper>/<name>.py``, a paper reproduction that lives
    outside the package: its folder and ``projects/`` go on ``sys.path`` (for its sibling modules and
    the shared step runner); ``run`` modules get a unique name, as every paper has one."""

    def load(paper: str, name: str):
        monkeypatch.syspath_prepend(str(PROJECTS))
        monkeypatch.syspath_prepend(str(PROJECTS / paper))
        if name != "run":
            return importlib.import_module(name)
        spec = importlib.util.spec_from_file_location(f"projects_{paper}_run", PROJECTS / paper / "run.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
