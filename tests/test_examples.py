"""Every script in examples/ runs as a user would run it and prints the numbers examples/README.md shows."""
import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
NUMBER = r"(-?\d+\.?\d*(?:e[-+]?\d+)?)"


def run(name: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=120,
                          env=env, cwd=EXAMPLES.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def values(output: str, label: str) -> list[float]:
    """The numbers after ``label`` on each line that holds it."""
    return [float(m) for m in re.findall(re.escape(label) + r"\s*" + NUMBER, output)]


def matches_readme(name: str, printed: str) -> None:
    """A deterministic script (no training) prints the README's output: same text, each number to 0.05."""
    readme = (EXAMPLES / "README.md").read_text()
    shown = re.search(rf"python examples/{re.escape(name)}\n```\n\n```text\n(.*?)```", readme, flags=re.S).group(1)
    assert re.sub(NUMBER, "#", shown) == re.sub(NUMBER, "#", printed)
    for a, b in zip(re.findall(NUMBER, shown), re.findall(NUMBER, printed)):
        assert abs(float(a) - float(b)) <= 0.05, (a, b)


def test_every_script_is_short_and_listed_in_the_readme():
    readme = (EXAMPLES / "README.md").read_text()
    assert len(SCRIPTS) >= 3
    for name in SCRIPTS:
        assert f"python examples/{name}" in readme
        assert len((EXAMPLES / name).read_text().splitlines()) < 40, name


def test_real_mr_slice():
    out = run("reconstruct_real_mr.py")
    matches_readme("reconstruct_real_mr.py", out)
    psnr = dict(zip(("zero-filled", "tv", "model"), values(out, "PSNR")))
    assert len(psnr) == 3, out
    assert 19 < psnr["zero-filled"] < 24
    assert psnr["tv"] > psnr["zero-filled"] + 1 and psnr["model"] > psnr["zero-filled"] + 1


def test_every_solver_has_the_one_contract():
    out = run("every_solver.py")
    matches_readme("every_solver.py", out)
    lines = out.strip().splitlines()
    assert len(lines) == 10, out
    psnr = {line.split(":")[0].strip(): values(line, "PSNR")[0] for line in lines}
    assert psnr["tv"] > psnr["tikhonov"] > psnr["adjoint"] > 20
    assert "4 estimate(s)" in next(line for line in lines if line.strip().startswith("rim:"))


def test_own_operator_and_a_trained_rim():
    out = run("own_operator_train_rim.py")
    assert values(out, "adjoint mismatch:")[0] < 1e-12
    trained = values(out, "test image PSNR")
    assert len(trained) == 4
    assert trained[-1] > trained[0] + 2  # measured: 23.66 -> 26.69 dB (the untrained RIM returns A^T y)
    assert trained[-1] > values(out, "blurred test image: PSNR")[0]  # the RIM does better than the blurred image


def test_irim_invertible_gradients_are_autograds():
    out = run("irim_invertible_gradients.py")
    assert values(out, "relative gradient difference:")[0] < 1e-10
    autograd = values(out, "autograd:")
    invertible = values(out, "invertible:")
    assert len(autograd) == len(invertible) == 2
    assert invertible[0] == invertible[1] < autograd[0] < autograd[1]
