"""Write your own operator (a horizontal motion blur) and train a small RIM on it for a few steps."""
import torch

from learn2invert import data, metrics, operators, solvers, train


class MotionBlur(operators.LinearOperator):
    """The mean of ``length`` horizontal circular shifts; its adjoint shifts the other way."""

    def __init__(self, length: int = 7):
        super().__init__()
        self.shifts = range(-(length // 2), length // 2 + 1)

    def A(self, x):
        return sum(torch.roll(x, s, dims=-1) for s in self.shifts) / len(self.shifts)

    def A_adjoint(self, y):
        return sum(torch.roll(y, -s, dims=-1) for s in self.shifts) / len(self.shifts)


torch.manual_seed(0)
blur, sigma = MotionBlur(), 0.02
print(f"adjoint mismatch: {operators.adjoint_mismatch(blur, torch.rand(2, 1, 16, 16).double()):.1e}")
patches = torch.stack(list(data.NaturalPatches(patch_size=32, length=64)))   # (64, 1, 32, 32) training patches
test = data.TestImages(size=64)[0][None]
y_test = operators.add_gaussian_noise(blur.A(test), sigma=sigma)

rim = solvers.RIM(1, steps=4, conv_channels=16, hidden_channels=16, norm="none")
optimizer = torch.optim.Adam(rim.parameters(), lr=1e-3)
for step in range(60):
    x = patches[torch.randint(len(patches), (8,))]
    loss = train.iterate_loss(rim(operators.add_gaussian_noise(blur.A(x), sigma=sigma), blur, sigma=sigma), x)
    optimizer.zero_grad(); loss.backward(); optimizer.step()
    if step % 20 == 0 or step == 59:
        with torch.no_grad():
            psnr = metrics.psnr(rim(y_test, blur, sigma=sigma)[-1], test)
        print(f"step {step:2d}: training loss {loss.item():.5f}, test image PSNR {psnr:.2f} dB")
print(f"blurred test image: PSNR {metrics.psnr(y_test, test):.2f} dB")
