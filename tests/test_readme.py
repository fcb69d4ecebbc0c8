"""The README's Python tutorial runs as written and prints what it promises."""

import ast
import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _tutorial_code() -> str:
    text = README.read_text()
    match = re.search(r"<!-- tutorial:byos -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its tutorial block"
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
