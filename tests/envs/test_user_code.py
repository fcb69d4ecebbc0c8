"""User code named as FILE.py:NAME (priors, rewards): every failure is one line that names the
file and the line."""

import textwrap

import pytest
import torch

from hybridgym.envs.user_code import load_function, load_prior_factory, split_spec

GOOD = """
import torch
from hybridgym.models import PhysicsPrior


class Cart(PhysicsPrior):
    def __init__(self, gain: float = 0.5):
        super().__init__(state_dim=2, action_dim=1)
        self.add_constant("gain", gain, positive=True)

    def forward(self, x, u):
        return torch.stack([x[:, 1], self.constants()["gain"] * u[:, 0]], dim=1)
"""


def _write(tmp_path, text, name="prior.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def _line_of(path, fragment):
    """1-based number of the first line of ``path`` holding ``fragment``."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if fragment in line)


def test_a_good_prior_file_builds_fresh_instances(tmp_path):
    path = _write(tmp_path, GOOD)
    build = load_prior_factory(f"{path}:Cart", 2, 1)
    first, second = build(), build()
    assert first is not second and first.physical_parameters() == {"gain": 0.5}
    out = first(torch.zeros(3, 2), torch.ones(3, 1))
    assert torch.allclose(out[:, 1], torch.full((3,), 0.5))


# each case: (old text, new text) of GOOD, the error's pattern, and a fragment of the line it
# must name (None: no line, e.g. a missing class)
BROKEN = {
    "syntax error": (
        ("def forward(self, x, u):", "def forward(self, x, u)"),
        "SyntaxError",
        "def forward(self, x, u)",
    ),
    "exception at import": (
        ("class Cart", "1 / 0\n\n\nclass Cart"),
        "importing .* failed: ZeroDivisionError",
        "1 / 0",
    ),
    "exception in __init__": (
        ("gain, positive=True", "-gain, positive=True"),
        r"Cart\(\) raised ValueError: constant 'gain' must be > 0",
        "-gain",
    ),
    "missing class": (
        ("class Cart", "class Trolley"),
        r"has no 'Cart'; it defines Trolley",
        None,
    ),
    "not a module": (
        ("class Cart(PhysicsPrior)", "class Cart"),
        r"Cart is not a class derived from torch.nn.Module",
        "class Cart",
    ),
    "wrong dims": (
        ("state_dim=2", "state_dim=3"),
        r"Cart has state_dim 3, but the system has 2 state variables",
        "class Cart",
    ),
    "forward raises": (
        ("return torch.stack", "raise RuntimeError('boom')\n        return torch.stack"),
        r"Cart.forward on a test batch .* raised RuntimeError: boom",
        "boom",
    ),
    "wrong shape": (
        ("], dim=1)", "], dim=0)"),
        r"Cart.forward\(x, u\) returned \(2, 8\) for x of shape \(8, 2\)",
        "class Cart",
    ),
    "needs arguments": (
        ("gain: float = 0.5", "gain: float"),
        r"Cart\(\) needs arguments \(gain: float\)",
        "class Cart",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_prior_file_gives_one_line_naming_file_and_line(tmp_path, case):
    (old, new), pattern, fragment = BROKEN[case]
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ValueError, match=pattern) as caught:
        load_prior_factory(f"{path}:Cart", 2, 1)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"--prior: {path}")
    if fragment is not None:
        assert f"{path} line {_line_of(path, fragment)}:" in message, message


def test_specs_that_are_not_file_and_name():
    with pytest.raises(ValueError, match=r"must be FILE\.py:NAME or MODULE:NAME"):
        split_spec("prior.py", "--prior")
    with pytest.raises(ValueError, match="NAME a Python name"):
        split_spec("prior.py:1x", "--prior")
    with pytest.raises(ValueError, match="does not exist"):
        load_prior_factory("/nonexistent/prior.py:Cart", 2, 1)
    with pytest.raises(ValueError, match="no module 'no_such_module_here'"):
        load_prior_factory("no_such_module_here:Cart", 2, 1)


def test_an_importable_module_works_too():
    build = load_prior_factory("hybridgym.envs.systems.pendulum:PendulumPrior", 2, 1)
    assert build().state_dim == 2


def test_reward_and_termination_functions_are_checked_on_a_batch(tmp_path):
    path = _write(
        tmp_path,
        """
        import torch

        def reward(x, u, x_next):
            return -(x_next ** 2).sum(-1)

        def ended(x_next):
            return x_next[:, 0] > 1

        def scalar(x, u, x_next):
            return 0.0

        def nan(x, u, x_next):
            return x[:, 0] * float("nan")

        def bad_index(x, u, x_next):
            return x_next[:, 5]
        """,
        name="rewards.py",
    )
    assert load_function(f"{path}:reward", "--reward", 2, 1, "reward") is not None
    assert load_function(f"{path}:ended", "--terminated", 2, 1, "terminated") is not None
    with pytest.raises(ValueError, match=r"returned float for a batch of 8 rows"):
        load_function(f"{path}:scalar", "--reward", 2, 1, "reward")
    with pytest.raises(ValueError, match=r"non-finite rewards"):
        load_function(f"{path}:nan", "--reward", 2, 1, "reward")
    with pytest.raises(ValueError, match=rf"--reward: {path} line 16: bad_index.*IndexError"):
        load_function(f"{path}:bad_index", "--reward", 2, 1, "reward")
