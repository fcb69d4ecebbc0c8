"""The model-based loop on systems that are not built-in tasks: a Gymnasium id (GymTask), with
a learned reward and termination, a user's prior, eval_every, resume from the run directory."""

import json
import math
import textwrap

import numpy as np
import pytest
import torch

from hybridgym.agents import LOOP_DEFAULTS, LoopConfig, ModelBasedLoop, evaluate
from hybridgym.agents.baselines import RandomController
from hybridgym.agents.loop import GENERIC_MODEL, generic_loop_defaults
from hybridgym.envs import GymTask
from hybridgym.models import Ensemble, HybridODE
from hybridgym.models.reward_model import load_parts

ENV = "hybridgym_test/Cart-v0"  # tests/conftest.py registers it: terminates, dt 0.1, 50 steps
#: a loop that runs in seconds
TINY = {
    "iterations": 2,
    "initial_steps": 40,
    "steps_per_iteration": 40,
    "ensemble": 2,
    "eval_episodes": 1,
    "fit": {"iterations": 30},
    "agent_kwargs": {"horizon": 5, "samples": 20, "iterations": 2},
}

PRIOR = """
import torch
from hybridgym.models import PhysicsPrior


class CartPrior(PhysicsPrior):
    def __init__(self):
        super().__init__(state_dim=2, action_dim=1)
        self.add_constant("gain", 0.6, positive=True)

    def forward(self, x, u):
        return torch.stack([x[:, 1], self.constants()["gain"] * u[:, 0]], dim=1)
"""


def tiny(**kwargs):
    return LoopConfig.for_task(ENV, **{**TINY, **kwargs})


def test_a_gymnasium_id_gets_the_generic_defaults():
    task = GymTask(ENV)
    config = LoopConfig.for_task(ENV)
    generic = generic_loop_defaults(task)
    assert ENV not in LOOP_DEFAULTS and config.agent == "mpc" == generic["agent"]
    assert (config.method, config.hidden, config.activation) == (
        GENERIC_MODEL["method"],
        GENERIC_MODEL["hidden"],
        GENERIC_MODEL["activation"],
    )
    assert config.ensemble == generic["ensemble"] > 1
    assert config.fit == {}  # FitConfig's own defaults
    assert config.initial_steps == config.episode_steps == 50  # the whole 50-step episode
    assert config.agent_kwargs == generic["agent_kwargs"]["mpc"]
    assert LoopConfig.for_task(task) == config  # a GymTask or its id: the same
    # the built-in tasks keep their rows
    assert (
        LoopConfig.for_task("pendulum").initial_steps == LOOP_DEFAULTS["pendulum"]["initial_steps"]
    )


@pytest.mark.slow
def test_the_loop_runs_a_gymnasium_env_and_resumes(tmp_path):
    loop = ModelBasedLoop(ENV, tiny(), tmp_path / "run", log=None)
    history = loop.run()
    assert [row["real_steps"] for row in history] == [40, 80]
    assert all(math.isfinite(row["eval_return_mean"]) for row in history)
    assert isinstance(loop.model, Ensemble) and loop.model.members[0].prior is None
    assert loop.model.members[0].method == "euler"
    assert loop.data[0].rewards is not None
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["task"] == ENV
    assert stored["env"]["env_id"] == ENV and stored["env"]["reward"] is None
    assert stored["env"]["prior"] is None and stored["env"]["max_episode_steps"] == 50
    for k in (1, 2):
        assert (tmp_path / "run" / "models" / f"task_{k:03d}.pt").is_file()
    # resumed from the run directory alone: same task, same learned parts, one more iteration
    again = ModelBasedLoop.from_run_dir(tmp_path / "run", log=None, iterations=3)
    assert again.task == loop.task and again.config == tiny(iterations=3)
    history = again.run()
    assert [row["real_steps"] for row in history] == [40, 80, 120]
    x = torch.randn(8, 2)
    fresh = GymTask(ENV)
    load_parts(fresh.learned_parts, tmp_path / "run" / "models" / "task_003.pt")
    assert torch.equal(fresh.reward(x, x[:, :1], x), again.task.reward(x, x[:, :1], x))


@pytest.mark.slow
def test_same_seed_same_run(tmp_path):
    rows = []
    for name in ("a", "b"):
        history = ModelBasedLoop(ENV, tiny(), tmp_path / name, log=None).run()
        rows.append([(r["real_steps"], r["eval_return_mean"], r["model_error"]) for r in history])
    assert rows[0] == rows[1]
    assert (tmp_path / "a" / "data" / "episodes").is_dir()
    a = (tmp_path / "a" / "models" / "task_002.pt").read_bytes()
    b = (tmp_path / "b" / "models" / "task_002.pt").read_bytes()
    assert a == b


@pytest.mark.parametrize("ensemble", [1, 2])
def test_a_users_prior_file_is_used_and_resumed(tmp_path, ensemble):
    (tmp_path / "prior.py").write_text(textwrap.dedent(PRIOR))
    spec = f"{tmp_path}/prior.py:CartPrior"
    task = GymTask(ENV, prior=spec)
    config = tiny(iterations=1, ensemble=ensemble)
    loop = ModelBasedLoop(task, config, tmp_path / "run", log=None)
    loop.run()
    members = loop.model.members if ensemble > 1 else [loop.model]
    assert all(type(m.prior).__name__ == "CartPrior" for m in members)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["env"]["prior"] == spec
    fitted = members[0].prior.physical_parameters()["gain"]
    assert fitted != 0.6
    # the checkpoint names a class hybridgym cannot rebuild: the loop hands the prior in
    cls = HybridODE if ensemble == 1 else Ensemble
    with pytest.raises(ValueError, match="pass prior=CartPrior"):
        cls.load(tmp_path / "run" / "models" / "model_001.pt")
    resumed = ModelBasedLoop.from_run_dir(tmp_path / "run", log=None, iterations=2)
    resumed.run()
    assert len(resumed.history) == 2
    assert type((resumed.model.members[0] if ensemble > 1 else resumed.model).prior).__name__ == (
        "CartPrior"
    )


@pytest.mark.slow
def test_eval_every_evaluates_every_kth_and_the_last_iteration(tmp_path):
    lines = []
    config = tiny(iterations=3, eval_every=2, eval_episodes=2)
    history = ModelBasedLoop(ENV, config, tmp_path / "run", log=lines.append).run()
    evaluated = [math.isfinite(row["eval_return_mean"]) for row in history]
    assert evaluated == [False, True, True]
    assert history[0]["eval_seconds"] < 0.1
    episode_lines = [line for line in lines if "evaluation episode" in line]
    assert len(episode_lines) == 4  # one per evaluated episode: 2 evaluations x 2 episodes
    assert episode_lines[0].startswith("iteration 2: evaluation episode 1/2: return ")
    with pytest.raises(ValueError, match="eval_every must be an int >= 1"):
        tiny(eval_every=0)


def test_evaluate_reports_each_episode_and_shows_a_progress_bar(capsys):
    seen = []
    task = GymTask(ENV)
    result = evaluate(
        RandomController(task, seed=0),
        task,
        episodes=3,
        progress=True,
        on_episode=lambda i, total, steps: seen.append((i, total, steps)),
    )
    assert [i for i, _, _ in seen] == [0, 1, 2]
    np.testing.assert_allclose([total for _, total, _ in seen], result.returns)
    assert [steps for _, _, steps in seen] == result.lengths.tolist()
    assert "evaluate" in capsys.readouterr().err  # tqdm's bar, on stderr


def test_exploration_only_while_collecting(tmp_path):
    """The loop hands the planner an optimism bonus scaled by the recorded rewards' range;
    deterministic predictions (evaluation) ignore it."""
    loop = ModelBasedLoop(ENV, tiny(iterations=1, exploration=0.5), tmp_path / "run", log=None)
    loop.run()
    agent = loop.agent
    rewards = loop.data.rewards()
    assert agent.exploration == pytest.approx(0.5 * (rewards.max() - rewards.min()))
    obs = np.array([0.2, 0.0], dtype=np.float32)
    agent.reset()
    plain, _ = agent.predict(obs, deterministic=True)
    without = ModelBasedLoop(ENV, tiny(iterations=1), tmp_path / "other", log=None)
    without.run()
    without.agent.reset()
    np.testing.assert_array_equal(without.agent.predict(obs, deterministic=True)[0], plain)
