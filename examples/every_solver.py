"""Every solver, classical or learned, called the same way on one deblurring problem.

The learned ones are untrained (random weights): this shows the contract, not their quality.
"""
import torch

from learn2invert import data, metrics, operators, solvers

torch.manual_seed(0)
x = data.TestImages(size=32, grey=True)[0][None]                  # (1, 1, 32, 32) held-out photograph
blur = operators.GaussianBlur(5, 1.5)
y = operators.add_gaussian_noise(blur.A(x), sigma=0.01)

every = {
    "adjoint": solvers.Adjoint(),
    "tikhonov": solvers.TikhonovSolver(0.01),
    "tv": solvers.TVSolver(0.01, iterations=50),
    "rim": solvers.RIM(1, steps=4, conv_channels=8, hidden_channels=8),
    "irim": solvers.IRIM(1, steps=2, state_channels=4, hidden_channels=4, downsampling=(1, 2), init="adjoint"),
    "unet": solvers.UNet(1, features=4, depth=2),
    "admm": solvers.ADMMNet(1, stages=2, features=4, cg_iterations=3),
    "unrolled resnet": solvers.unrolled_solver(1, prox="resnet", folds=3, prox_params={"features": 4, "blocks": 1}),
    "luser": solvers.unrolled_solver(1, prox="luser", folds=2, shared=True,
                                     prox_params={"features": 4, "groups": 2, "forward_solver": {"max_iter": 4}}),
    "deq4ip": solvers.DEQ4IP(1, depth=3, features=4, forward_solver={"max_iter": 4}),
}
for name, solver in every.items():
    assert isinstance(solver, solvers.Solver)
    with torch.no_grad():
        estimates = solver.eval()(y, blur, sigma=0.01)            # the one contract: a list, the last is the result
    psnr = metrics.psnr(estimates[-1], x)
    print(f"{name:>15}: {len(estimates)} estimate(s), PSNR {psnr:5.2f} dB  ({type(solver).__name__})")
