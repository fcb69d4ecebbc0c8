"""Property tests of the configs: FitConfig and LoopConfig take any value of any field and
either hold a documented, valid value or raise ValueError/TypeError naming the field."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgym.agents.loop import AGENTS, LoopConfig
from hybridgym.envs import task_names
from hybridgym.models import FitConfig
from hybridgym.models.hybrid import METHODS, SENSITIVITIES
from hybridgym.models.residual import ACTIVATIONS

SETTINGS = settings(max_examples=500, deadline=None)

#: any value a user (or a config file) might put in a field
VALUES = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([10**30, -(10**30), 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 1e300, float("nan"), float("inf")]),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.sampled_from(["cosine", "constant", "direct", "adjoint", "rk4", "relu", "mpc", "cpu"]),
    st.sampled_from(["auto", "plateau", "Auto"]),
    st.lists(st.integers(-2, 40), max_size=3),
    st.lists(st.integers(-2, 40), max_size=3).map(tuple),
    st.just({}),
    st.just({"horizon": 3}),
    st.just({"horizon": -1}),
    st.just({"horizn": 3}),
    st.just([1.5]),
    st.just(("a",)),
)


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _finite(value: Any, low: float, high: float = math.inf, *, open_low=False, open_high=False):
    if not _is_real(value) or not math.isfinite(value):
        return False
    above = value > low if open_low else value >= low
    below = value < high if open_high else value <= high
    return above and below


def _auto_or(rule):
    """The rule of a field that also takes ``"auto"`` (chosen from the data)."""
    return lambda v: v == "auto" or rule(v)


#: what the docstring of FitConfig promises about each field that it accepts
FIT_VALID = {
    "horizon": _auto_or(lambda v: _is_int(v, 1)),
    "iterations": _auto_or(lambda v: _is_int(v, 0)),
    "learning_rate": _auto_or(lambda v: _finite(v, 0, open_low=True)),
    # plateau with iterations "auto" only, cosine and constant with a fixed count only
    "lr_schedule": lambda v: v in ("auto", "plateau", "cosine", "constant"),
    "batch_size": _auto_or(lambda v: v is None or _is_int(v, 1)),
    "curriculum": lambda v: _finite(v, 0, 1),
    "lbfgs_iterations": _auto_or(lambda v: _is_int(v, 0)),
    "residual_penalty": _auto_or(lambda v: _finite(v, 0)),
    "physics_first": lambda v: v == "auto" or isinstance(v, bool),
    "validation_fraction": lambda v: _finite(v, 0, 1, open_high=True),
    "eval_every": lambda v: _is_int(v, 1),
    "patience": lambda v: v is None or _is_int(v, 1),
    "sensitivity": lambda v: v in SENSITIVITIES,
    "seed": lambda v: _is_int(v, 0),
    "progress": lambda v: isinstance(v, bool),
    "weight_decay": lambda v: _finite(v, 0),
    "grad_clip": lambda v: v is None or (_is_real(v) and v > 0),
    "validation_horizons": lambda v: (
        isinstance(v, tuple) and len(v) > 0 and all(_is_int(k, 1) for k in v)
    ),
    "huber_delta": lambda v: v is None or _finite(v, 0, open_low=True),
}


def test_every_fit_config_field_has_a_rule():
    assert set(FIT_VALID) == {f.name for f in dataclasses.fields(FitConfig)}


def _check_error(error: BaseException, name: str) -> None:
    assert isinstance(error, ValueError | TypeError), f"{type(error).__name__}: {error}"
    assert name in str(error), f"the message {str(error)!r} does not name {name!r}"


@SETTINGS
@given(name=st.sampled_from(sorted(FIT_VALID)), value=VALUES)
def test_fit_config_holds_a_valid_value_or_names_the_field(name, value):
    try:
        config = FitConfig(**{name: value})
    except Exception as error:  # the property is about the type and the message
        _check_error(error, name)
        return
    stored = getattr(config, name)
    assert FIT_VALID[name](stored), f"FitConfig accepted {name}={value!r} (stored {stored!r})"
    assert FitConfig(**dataclasses.asdict(config)) == config


@SETTINGS
@given(fields=st.dictionaries(st.sampled_from(sorted(FIT_VALID)), VALUES, max_size=4))
def test_fit_config_with_several_fields(fields):
    try:
        config = FitConfig(**fields)
    except Exception as error:
        assert isinstance(error, ValueError | TypeError), f"{type(error).__name__}: {error}"
        assert any(name in str(error) for name in fields), str(error)
        return
    for name in fields:
        assert FIT_VALID[name](getattr(config, name)), (name, fields[name])


# --- LoopConfig ----------------------------------------------------------------------------------
def _mask(v: Any) -> bool:
    return v is None or (
        isinstance(v, tuple) and all(_is_int(d, 0) for d in v) and len(set(v)) == len(v)
    )


LOOP_VALID = {
    "iterations": lambda v: _is_int(v, 1),
    "initial_steps": lambda v: _is_int(v, 1),
    "steps_per_iteration": lambda v: _is_int(v, 1),
    "episode_steps": lambda v: v is None or _is_int(v, 1),
    "collect_schedule": lambda v: isinstance(v, tuple) and all(_is_int(s, 1) for s in v),
    "agent": lambda v: v in AGENTS,
    "agent_kwargs": lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
    "agent_updates": lambda v: _is_int(v, 1),
    "first_agent_updates": lambda v: v is None or _is_int(v, 1),
    "refit_every": lambda v: v is None or _is_int(v, 1),
    "learned_envs": lambda v: _is_int(v, 1),
    "start_fraction": lambda v: _finite(v, 0, 1),
    "hidden": lambda v: isinstance(v, tuple) and all(_is_int(h, 1) for h in v),
    "activation": lambda v: v in ACTIVATIONS,
    "residual_mask": _mask,
    "method": lambda v: v in METHODS,
    "substeps": lambda v: _is_int(v, 1),
    "ensemble": lambda v: _is_int(v, 1),
    "prior_perturbation": lambda v: v is None or _finite(v, 0),
    "prior": lambda v: isinstance(v, bool),
    "residual": lambda v: isinstance(v, bool),
    "fit": lambda v: isinstance(v, dict) and FitConfig(**v) is not None,
    "stop_return": lambda v: v is None or _is_real(v),
    "eval_episodes": lambda v: _is_int(v, 0),
    "eval_every": lambda v: _is_int(v, 1),
    "exploration": lambda v: _finite(v, 0),
    "eval_seed": lambda v: _is_int(v, 0),
    "error_horizon": lambda v: _is_int(v, 1),
    "seed": lambda v: _is_int(v, 0),
    "device": lambda v: isinstance(v, str) and bool(v.strip()),
    "progress": lambda v: isinstance(v, bool),
}


def test_every_loop_config_field_has_a_rule():
    assert set(LOOP_VALID) == {f.name for f in dataclasses.fields(LoopConfig)}


@SETTINGS
@given(name=st.sampled_from(sorted(LOOP_VALID)), value=VALUES, mpc=st.booleans())
def test_loop_config_holds_a_valid_value_or_names_the_field(name, value, mpc):
    base = {"agent": "mpc"} if mpc and name != "agent" else {}
    try:
        config = LoopConfig(**{**base, name: value})
    except Exception as error:  # the property is about the type and the message
        _check_error(error, name)
        return
    stored = getattr(config, name)
    assert LOOP_VALID[name](stored), f"LoopConfig accepted {name}={value!r} (stored {stored!r})"
    assert LoopConfig(**config.to_dict()) == config  # what a run directory saves reads back


TASK_NAMES = st.one_of(st.sampled_from(task_names()), st.text(max_size=8), st.integers())


@SETTINGS
@given(
    task=TASK_NAMES,
    overrides=st.dictionaries(
        st.one_of(st.sampled_from(sorted(LOOP_VALID)), st.sampled_from(["agnet", "lr"])),
        VALUES,
        max_size=3,
    ),
)
def test_loop_config_for_task_holds_valid_values_or_names_the_problem(task, overrides):
    try:
        config = LoopConfig.for_task(task, **overrides)
    except Exception as error:
        assert isinstance(error, ValueError | TypeError), f"{type(error).__name__}: {error}"
        message = str(error)
        assert "task" in message or any(name in message for name in overrides), message
        return
    assert isinstance(task, str)  # a task name, or (rarely drawn) a Gymnasium id
    for name in LOOP_VALID:
        value = getattr(config, name)
        assert LOOP_VALID[name](value), f"for_task({task!r}) gave {name}={value!r}"
