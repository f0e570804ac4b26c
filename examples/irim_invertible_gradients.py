"""An i-RIM trained invertibly (no activations stored) gets autograd's gradients, with memory independent of depth."""
import torch

from learn2invert import data, operators, solvers
from learn2invert.train.memory_check import saved_tensor_bytes

torch.manual_seed(0)
x = data.BrainSlices(split="train", size=32)[0][None].double()   # (1, 2, 32, 32) complex brain slice
mri = operators.SingleCoilMRI(operators.masks.random_mask((32,), acceleration=4, center_fraction=0.08, seed=0))
y = operators.add_gaussian_noise(mri.A(x), sigma=0.01)


def gradients(model):
    model.zero_grad()
    torch.mean((model(y, mri, sigma=0.01)[-1] - x) ** 2).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


irim = solvers.IRIM(2, steps=2, state_channels=8, hidden_channels=8, downsampling=(1, 2), identity_init=False).double()
irim.memory = "autograd"
g_autograd = gradients(irim)
irim.memory = "invertible"                                        # each layer inverted and back-propagated in turn
g_invertible = gradients(irim)
print(f"parameters: {g_autograd.numel()}, relative gradient difference: "
      f"{float((g_invertible - g_autograd).norm() / g_autograd.norm()):.1e}")
for steps in (2, 8):
    model = solvers.IRIM(2, steps=steps, state_channels=8, hidden_channels=8, downsampling=(1, 2)).double()
    for memory in ("autograd", "invertible"):
        model.memory = memory
        loss = lambda: torch.mean((model(y, mri, sigma=0.01)[-1] - x) ** 2)
        saved = saved_tensor_bytes(loss, model.parameters()) / 2**20
        print(f"steps {steps}, {memory:>10}: {saved:.2f} MiB saved for backward")
