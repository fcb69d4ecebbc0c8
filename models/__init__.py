"""hybridgym.models: the math layer.

Physics priors, residual networks, hybrid ODEs, ensembles, trajectory data, fitting and
symbolic distillation. This package imports nothing from ``hybridgym.envs``,
``hybridgym.agents`` or ``hybridgym.scripts``.
"""

from importlib.metadata import PackageNotFoundError, version

from hybridgym.models.arrays import array_namespace, wrap_angle
from hybridgym.models.data import Episode, TaskLike, TrajectoryDataset
from hybridgym.models.distill import SymbolicResidual, distill
from hybridgym.models.ensemble import Ensemble
from hybridgym.models.fit import AUTO, FitConfig, FitReport, fit, prediction_errors
from hybridgym.models.hybrid import (
    ADAPTIVE_METHODS,
    METHODS,
    HybridODE,
    register_prior_builder,
    register_residual,
)
from hybridgym.models.integrators import FIXED_STEP_METHODS, fixed_step
from hybridgym.models.priors import ConstantSpec, PhysicsPrior
from hybridgym.models.residual import MLPResidual, UnitResidual
from hybridgym.models.reward_model import (
    RewardFitConfig,
    RewardModel,
    TerminationModel,
    fit_reward,
    fit_termination,
)
from hybridgym.models.topology import Topology

try:
    __version__ = version("hybridgym")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "ADAPTIVE_METHODS",
    "AUTO",
    "FIXED_STEP_METHODS",
    "METHODS",
    "ConstantSpec",
    "Ensemble",
    "Episode",
    "FitConfig",
    "FitReport",
    "HybridODE",
    "MLPResidual",
    "PhysicsPrior",
    "RewardFitConfig",
    "RewardModel",
    "SymbolicResidual",
    "TaskLike",
    "TerminationModel",
    "Topology",
    "TrajectoryDataset",
    "UnitResidual",
    "__version__",
    "array_namespace",
    "distill",
    "fit",
    "fit_reward",
    "fit_termination",
    "fixed_step",
    "prediction_errors",
    "register_prior_builder",
    "register_residual",
    "wrap_angle",
]
