"""hybridgym.agents: controllers (hand-made baselines, SB3 agents, the MPC planner, a policy
trained by differentiating through the model), the model-based loop, and evaluation on real
systems."""

from hybridgym.agents.baselines import (
    ConstantController,
    HarvestThresholdController,
    RandomController,
    ThermostatController,
    hand_made_baseline,
)
from hybridgym.agents.differentiable import (
    DifferentiablePolicyAgent,
    PolicyTrainingConfig,
    PolicyTrainingReport,
)
from hybridgym.agents.evaluation import Episode, EvalResult, evaluate, rollout
from hybridgym.agents.loop import LOOP_DEFAULTS, LoopConfig, ModelBasedLoop
from hybridgym.agents.mpc import MPCAgent
from hybridgym.agents.saved import load_controller, load_planner, save_planner
from hybridgym.agents.sb3 import (
    AGENT_DEFAULTS,
    LearningCurve,
    default_hyperparameters,
    learning_curve,
    load_agent,
    make_agent,
    save_agent,
    saved_algo,
)

__all__ = [
    "AGENT_DEFAULTS",
    "LOOP_DEFAULTS",
    "ConstantController",
    "DifferentiablePolicyAgent",
    "Episode",
    "EvalResult",
    "HarvestThresholdController",
    "LearningCurve",
    "LoopConfig",
    "MPCAgent",
    "ModelBasedLoop",
    "PolicyTrainingConfig",
    "PolicyTrainingReport",
    "RandomController",
    "ThermostatController",
    "default_hyperparameters",
    "evaluate",
    "hand_made_baseline",
    "learning_curve",
    "load_agent",
    "load_controller",
    "load_planner",
    "make_agent",
    "rollout",
    "save_agent",
    "save_planner",
    "saved_algo",
]
