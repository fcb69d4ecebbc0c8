"""hybridgym.agents: controllers (hand-made baselines; later SB3 agents, MPC, the model-based
loop) and their evaluation on real systems."""

from hybridgym.agents.baselines import (
    ConstantController,
    HarvestThresholdController,
    RandomController,
    ThermostatController,
    hand_made_baseline,
)
from hybridgym.agents.evaluation import Episode, EvalResult, evaluate, rollout
from hybridgym.agents.mpc import MPCAgent

__all__ = [
    "ConstantController",
    "Episode",
    "EvalResult",
    "HarvestThresholdController",
    "MPCAgent",
    "RandomController",
    "ThermostatController",
    "evaluate",
    "hand_made_baseline",
    "rollout",
]
