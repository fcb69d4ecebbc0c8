"""Shared test setup: one torch thread (a busy 2-core machine runs up to 20x slower with two),
and tests marked ``gpu`` skip with a reason where torch sees no CUDA."""

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


GPU_SKIP_REASON = "needs CUDA: torch.cuda.is_available() is False"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every test marked ``gpu`` (``-m gpu`` selects them) where torch sees no CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=GPU_SKIP_REASON)
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


#: small Gymnasium envs of our own for the tests of foreign systems (GymTask, loop --env): a
#: module that registers them on import. In-process tests import it below; subprocess tests
#: write it to a folder on PYTHONPATH and name the envs ``hybridgym_tiny_envs:hybridgym_test/...``.
TINY_ENVS_SOURCE = '''
"""Tiny registered envs for hybridgym's tests."""
import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Cart(gym.Env):
    """A cart on a track: position and velocity, an acceleration in [-1, 1], dt 0.1.
    Reward 1 per step while |position| <= 1; the episode terminates when it leaves (reward 0)."""

    dt = 0.1

    def __init__(self, observation="box", actions="bounded"):
        self.observation_space = spaces.Box(-5.0, 5.0, (2,), np.float32)
        if observation == "dict":
            self.observation_space = spaces.Dict({"x": spaces.Box(-5.0, 5.0, (2,), np.float32)})
        high = 1.0 if actions == "bounded" else np.inf
        self.action_space = spaces.Box(-high, high, (1,), np.float32)
        self.state = np.zeros(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = self.np_random.uniform(-0.3, 0.3, size=2)
        return self.state.astype(np.float32), {}

    def step(self, action):
        u = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        x, v = self.state
        self.state = np.array([x + self.dt * v, v + self.dt * u])
        terminated = bool(abs(self.state[0]) > 1.0)
        return self.state.astype(np.float32), float(not terminated), terminated, False, {}


gym.register("hybridgym_test/Cart-v0", entry_point=Cart, max_episode_steps=50)
gym.register("hybridgym_test/CartNoLimit-v0", entry_point=Cart)
gym.register(
    "hybridgym_test/DictObs-v0", entry_point=Cart, kwargs={"observation": "dict"},
    max_episode_steps=50,
)
gym.register(
    "hybridgym_test/Unbounded-v0", entry_point=Cart, kwargs={"actions": "unbounded"},
    max_episode_steps=50,
)
'''


def _import_tiny_envs() -> None:
    import sys
    import types

    if "hybridgym_tiny_envs" in sys.modules:
        return
    module = types.ModuleType("hybridgym_tiny_envs")
    sys.modules["hybridgym_tiny_envs"] = module
    exec(compile(TINY_ENVS_SOURCE, "hybridgym_tiny_envs.py", "exec"), module.__dict__)


_import_tiny_envs()


@pytest.fixture
def tiny_envs_path(tmp_path_factory: pytest.TempPathFactory):
    """A folder holding ``hybridgym_tiny_envs.py``, for a subprocess's PYTHONPATH."""
    folder = tmp_path_factory.mktemp("tiny_envs")
    (folder / "hybridgym_tiny_envs.py").write_text(TINY_ENVS_SOURCE)
    return folder
