"""Fixed-step integration of a controlled vector field over one control interval.

The action is held constant over the interval (zero-order hold). The same code integrates the
real systems (numpy float64) and the models (torch), so a model whose vector field is the true one
reproduces the real environment step for step.
"""

from __future__ import annotations

from collections.abc import Callable

from hybridgym.models.arrays import Array

VectorField = Callable[[Array, Array], Array]

FIXED_STEP_METHODS = ("euler", "midpoint", "rk4")


def _euler(f: VectorField, x: Array, u: Array, h: float) -> Array:
    return x + h * f(x, u)


def _midpoint(f: VectorField, x: Array, u: Array, h: float) -> Array:
    return x + h * f(x + 0.5 * h * f(x, u), u)


def _rk4(f: VectorField, x: Array, u: Array, h: float) -> Array:
    k1 = f(x, u)
    k2 = f(x + 0.5 * h * k1, u)
    k3 = f(x + 0.5 * h * k2, u)
    k4 = f(x + h * k3, u)
    return x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


_STEPPERS = {"euler": _euler, "midpoint": _midpoint, "rk4": _rk4}


def fixed_step(
    f: VectorField,
    x: Array,
    u: Array,
    dt: float,
    *,
    method: str = "rk4",
    substeps: int = 1,
) -> Array:
    """Integrate dx/dt = f(x, u) over one interval of length ``dt`` with u held constant.

    Args:
        f: vector field, (B x n, B x m) -> B x n; numpy or torch.
        x: states, B x n.
        u: actions, B x m (held over the interval).
        dt: interval length, in the system's time unit.
        method: ``"euler"``, ``"midpoint"`` or ``"rk4"`` (classic 4th-order Runge-Kutta).
        substeps: equal substeps per interval.

    Returns:
        States at the end of the interval, B x n, of the same kind as ``x``.
    """
    if method not in _STEPPERS:
        raise ValueError(f"method must be one of {FIXED_STEP_METHODS}, got {method!r}")
    if not isinstance(substeps, int) or isinstance(substeps, bool) or substeps < 1:
        raise ValueError(f"substeps must be a positive int, got {substeps!r}")
    step = _STEPPERS[method]
    h = dt / substeps
    for _ in range(substeps):
        x = step(f, x, u, h)
    return x
