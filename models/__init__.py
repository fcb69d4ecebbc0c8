"""hybridgym.models: the math layer.

Physics priors, residual networks, hybrid ODEs, ensembles, trajectory data, fitting and
symbolic distillation. This package imports nothing from ``hybridgym.envs``,
``hybridgym.agents`` or ``hybridgym.scripts``.
"""

from importlib.metadata import PackageNotFoundError, version

from hybridgym.models.arrays import array_namespace, wrap_angle
from hybridgym.models.integrators import FIXED_STEP_METHODS, fixed_step
from hybridgym.models.priors import ConstantSpec, PhysicsPrior

try:
    __version__ = version("hybridgym")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "FIXED_STEP_METHODS",
    "ConstantSpec",
    "PhysicsPrior",
    "__version__",
    "array_namespace",
    "fixed_step",
    "wrap_angle",
]
