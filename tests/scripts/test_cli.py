"""The command line, end to end through a subprocess."""

import json
import os
import subprocess
import sys

import pytest

EXE = [sys.executable, "-m", "hybridgym.scripts.main"]


def _run(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run([*EXE, *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_version_and_help():
    out = _run("--version")
    assert out.returncode == 0 and out.stdout.startswith("hybridgym ")
    out = _run("--help")
    assert out.returncode == 0 and "demo" in out.stdout and "systems" in out.stdout


def test_systems_lists_every_task():
    out = _run("systems")
    assert out.returncode == 0, out.stderr
    for expected in (
        "Pendulum-v1",
        "hybridgym/LotkaVolterra-v0",
        "hybridgym/DataCenter-v0",
        "hybridgym/CartPoleSwingUp-v0",
        "0.9 x1 x2",
    ):
        assert expected in out.stdout


#: the subcommands, each of which must answer --help without loading a heavy library
SUBCOMMANDS = (
    "systems", "demo", "loop", "collect", "fit", "distill", "train", "evaluate", "compare", "plot",
)  # fmt: skip
HEAVY = ("torch", "numpy", "stable_baselines3", "matplotlib", "gymnasium", "hybridgym.models")


def test_help_of_every_subcommand_loads_no_heavy_library():
    """``hybridgym --help`` and ``hybridgym SUBCOMMAND --help`` start in a fraction of a second:
    torch, SB3, matplotlib and hybridgym's packages are imported only by a subcommand's run."""
    script = f"""
import contextlib, io, sys
from hybridgym.scripts.main import main
for argv in [["--help"]] + [[name, "--help"] for name in {SUBCOMMANDS!r}]:
    with contextlib.redirect_stdout(io.StringIO()) as text, contextlib.suppress(SystemExit):
        main(argv)
    assert text.getvalue().startswith("usage: hybridgym"), argv
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_help_states_the_library_defaults(capsys):
    """The help texts name what the library uses (written out, as --help imports no torch)."""
    from hybridgym.agents.compare import METHODS as COMPARED
    from hybridgym.agents.diagnostics import HELD_OUT_SEED, MAX_HORIZON
    from hybridgym.models import METHODS
    from hybridgym.scripts.main import main

    def help_text(command):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        return " ".join(capsys.readouterr().out.split())

    assert all(method in help_text("fit") for method in METHODS)
    assert f"from {', '.join(COMPARED)} (default" in help_text("compare")
    text = help_text("plot")
    assert f"(default {HELD_OUT_SEED}:" in text and f"(default {MAX_HORIZON})" in text


@pytest.mark.slow
def test_demo_writes_summary_and_plots(tmp_path):
    out = _run(
        "demo",
        "--out",
        str(tmp_path / "demo"),
        "--episodes",
        "1",
        "--iterations",
        "1",
        "--eval-episodes",
        "2",
        "--sac-steps",
        "200",
        "--quiet",
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    # the main job: the model-based loop on Pendulum-v1, with SAC's curve beside it
    loop = summary["model_based_loop"]
    assert [row["real_steps"] for row in loop["loop"]] == [50]
    assert loop["loop"][0]["eval_return_mean"] > -400  # random actions score about -1200
    assert [steps for steps, _ in loop["sac"]["curve"]] == [20 * k for k in range(1, 11)]
    assert (tmp_path / "demo" / "loop" / "state.json").is_file()
    assert (tmp_path / "demo" / "loop" / "plots" / "return_vs_real_steps.png").is_file()
    assert "loop (mpc) it. 1" in out.stdout
    returns = summary["returns"]
    assert set(returns) == {"pendulum", "lotka_volterra", "datacenter", "cartpole_swingup"}
    # the hand-made controllers beat doing nothing, and the table shows the numbers
    lv = returns["lotka_volterra"]
    assert lv["HarvestThresholdController"]["mean"] > lv["zero action"]["mean"]
    dc = returns["datacenter"]
    assert dc["ThermostatController"]["mean"] > dc["random"]["mean"]
    assert f"{dc['ThermostatController']['mean']:.2f}" in out.stdout
    # the seed example: exactly the interaction terms, printed and in the summary
    terms = summary["missing_physics"]["terms"]
    assert set(terms["prey"]) == {"prey predators"} == set(terms["predators"])
    assert terms["prey"]["prey predators"] == pytest.approx(-0.9, rel=0.05)
    assert "learned: dprey/dt = prior -0.9" in out.stdout
    pngs = sorted(p.name for p in (tmp_path / "demo").glob("*.png"))
    assert pngs == [
        "cartpole_swingup.png",
        "datacenter.png",
        "lotka_volterra.png",
        "lotka_volterra_missing_physics.png",
        "lotka_volterra_phase.png",
        "pendulum.png",
    ]
    for name in pngs:
        data = (tmp_path / "demo" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        assert f"plot: {tmp_path / 'demo' / name}" in out.stdout


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (("demo", "--episodes", "0"), "--episodes must be >= 1"),
        (("demo", "--episodes", "many"), "invalid int value"),
        (("demo", "--sac-steps", "-1"), "--sac-steps must be >= 0"),
        (("loop", "pendulum", "--run-dir", "r", "--set", "nonsense"), "KEY=VALUE"),
        (("loop", "pendulum", "--run-dir", "r", "--agent", "mcp"), "did you mean 'mpc'"),
        (("nonsense",), "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args, pattern, tmp_path):
    out = _run(*args, cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert pattern in lines[-1] and "Traceback" not in out.stderr
    assert len([line for line in lines if "error" in line]) == 1
    assert not (tmp_path / "runs").exists(), "a refused command writes nothing"
