"""The README's tutorials run as written and print what they promise."""

import ast
import csv
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _tutorial_code(name: str = "byos") -> str:
    text = README.read_text()
    match = re.search(rf"<!-- tutorial:{name} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"README lost its tutorial block {name!r}"
    return match.group(1)


@pytest.mark.slow
def test_bring_your_own_system_tutorial(tmp_path):
    script = tmp_path / "tutorial.py"
    script.write_text("import torch\ntorch.set_num_threads(1)\n" + _tutorial_code())
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    constants = ast.literal_eval(lines[0])
    assert constants["stiffness"] == pytest.approx(4.0, rel=0.05)
    assert constants["gain"] == pytest.approx(2.0, rel=0.05)
    equations = ast.literal_eval(lines[1])
    assert equations[0] == "dposition/dt = prior +0"
    friction = re.fullmatch(r"dvelocity/dt = prior (-0\.\d+) velocity", equations[1])
    assert friction and float(friction.group(1)) == pytest.approx(-0.3, rel=0.1)
    assert (tmp_path / "oscillator.pt").exists()


@pytest.mark.slow
def test_bring_your_own_system_control_tutorial(tmp_path):
    """The second part: a CustomTask for the fitted oscillator, SAC trained in the model, and
    evaluated on the true system it never saw, where it must clearly beat random actions and
    no force, and return what the model predicted."""
    script = tmp_path / "tutorial.py"
    code = _tutorial_code("byos") + _tutorial_code("byos-control")
    script.write_text("import torch\ntorch.set_num_threads(1)\n" + code)
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    returns = dict(
        re.fullmatch(r"(.+): (-?\d+\.\d+)", line).groups() for line in out.stdout.splitlines()[2:]
    )
    returns = {name: float(value) for name, value in returns.items()}
    assert set(returns) == {
        "SAC in the model",
        "SAC on the system",
        "random actions on the system",
        "no force on the system",
    }
    sac = returns["SAC on the system"]
    baselines = returns["random actions on the system"], returns["no force on the system"]
    assert sac > max(baselines) + 3.0
    assert returns["SAC in the model"] == pytest.approx(sac, abs=1.0)


def _cli_tutorial() -> list[list[str]]:
    """The shell commands of the README's command-line tutorial, in order: every ```bash block
    after a ``<!-- tutorial:cli -->`` marker, one command a line (a trailing backslash
    continues it)."""
    blocks = re.findall(r"<!-- tutorial:cli -->\s*```bash\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README lost its command-line tutorial"
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def _option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def _mean_return(stdout: str) -> float:
    """MEAN of the ``return: MEAN +- STD over N episodes`` line of ``hybridgym evaluate``."""
    match = re.search(r"^return: (-?\d+\.\d+) \+- (\d+\.\d+) over (\d+) episodes$", stdout, re.M)
    assert match, stdout
    return float(match.group(1))


@pytest.mark.slow
def test_command_line_tutorial(tmp_path):
    """Every command of the CLI tutorial exits 0, leaves the files it names, and prints numbers
    that make sense: the fitted constants near the truth, the planner far above random actions
    on the real pendulum, the loop's model error falling, the loop ahead of SAC."""
    outputs = {}
    for words in _cli_tutorial():
        assert words[0] == "hybridgym", f"not a hybridgym command: {shlex.join(words)}"
        out = subprocess.run(
            [sys.executable, "-m", "hybridgym.scripts.main", *words[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert out.returncode == 0, f"{shlex.join(words)}\n{out.stderr}"
        written = [_option(words, o) for o in ("--out", "--json", "--run-dir") if o in words]
        printed = re.findall(r"runs/tutorial/[\w./-]*\w", out.stdout)
        for path in written + printed:
            assert (tmp_path / path).exists(), f"{shlex.join(words)} did not write {path}"
        key = words[1] if words[1] != "evaluate" else f"evaluate {_option(words, '--agent')}"
        outputs[key] = (words, out.stdout)
    assert set(outputs) >= {"systems", "collect", "fit", "distill", "train", "loop", "compare"}
    assert "Pendulum-v1" in outputs["systems"][1]

    words, stdout = outputs["collect"]
    episodes, steps = int(_option(words, "--episodes")), int(_option(words, "--steps-per-episode"))
    assert f"collected {episodes} episodes, {episodes * steps} steps" in stdout

    words, stdout = outputs["fit"]  # constant | start | fitted | true value
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in stdout.splitlines()]
    constants = {r[0]: (float(r[2]), float(r[3])) for r in rows if r and r[0] in ("a", "b")}
    assert set(constants) == {"a", "b"}
    for fitted, truth in constants.values():
        assert fitted == pytest.approx(truth, rel=0.05)

    words, _ = outputs["distill"]  # the Euler map's extra angle step: dt * b * torque
    terms = json.loads((tmp_path / _option(words, "--json")).read_text())["members"][0]["terms"]
    assert terms["theta"]["torque"] == pytest.approx(0.05 * 3.0, abs=0.05)

    planner = next(k for k in outputs if k.startswith("evaluate ") and k != "evaluate random")
    words, stdout = outputs[planner]
    planned, random = _mean_return(stdout), _mean_return(outputs["evaluate random"][1])
    assert json.loads((tmp_path / _option(words, "--json")).read_text())["mean"] == pytest.approx(
        planned, abs=1e-4
    )
    assert random < -600 and planned > -400  # swung up and held: random actions never are

    words, _ = outputs["loop"]
    with open(tmp_path / _option(words, "--run-dir") / "metrics.csv") as f:
        metrics = list(csv.DictReader(f))
    assert len(metrics) >= 2
    assert float(metrics[-1]["model_error"]) < float(metrics[0]["model_error"])
    assert all(float(row["eval_return_mean"]) > -400 for row in metrics)

    words, _ = outputs["compare"]
    results = json.loads((tmp_path / _option(words, "--out") / "results.json").read_text())
    loop, sac = results["trials"]["loop"]["0"], results["trials"]["sac"]["0"]
    assert loop["steps_to_threshold"] is not None
    assert loop["final_return_mean"] > sac["final_return_mean"]

    _, stdout = outputs["plot"]
    match = re.search(r"10-step RMSE on held-out data: theta (\S+), thetadot (\S+)$", stdout, re.M)
    assert match and max(float(match.group(1)), float(match.group(2))) < 0.5


def test_any_gymnasium_env_commands_print_what_the_readme_shows():
    """The README's ``hybridgym systems --env`` block: each command's output holds the lines
    the README prints for it (the refusal's beginning, before its ``...``)."""
    text = README.read_text()
    match = re.search(
        r"<!-- tutorial:any-env -->\s*```bash\n(.*?)```\s*```text\n(.*?)```", text, re.S
    )
    assert match, "README lost its tutorial block 'any-env'"
    commands = [shlex.split(line) for line in match.group(1).strip().splitlines()]
    shown = [line for line in match.group(2).splitlines() if line.strip() and line != "..."]
    outputs = []
    for command in commands:
        assert command[0] == "hybridgym"
        out = subprocess.run(
            [sys.executable, "-m", "hybridgym.scripts.main", *command[1:]],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "160"},
        )
        outputs.append(out.stdout + out.stderr)
    for line in shown:
        expected = line.split(" ...")[0]
        assert any(expected in output for output in outputs), expected
