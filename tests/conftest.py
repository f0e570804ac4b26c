import pytest
import torch

# The tests run many tiny tensor operations, and `make test` runs two xdist workers on two cores:
# one intra-op thread per process avoids oversubscription and synchronisation overhead.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
