"""HybridODE: dx/dt = prior(x, u; theta) + mask * residual(x, u; phi), stepped per control
interval with the action held (zero-order hold)."""

from __future__ import annotations

import importlib
import io
import math
import os
import pathlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from hybridgym.models.files import atomic_write_bytes
from hybridgym.models.integrators import FIXED_STEP_METHODS, fixed_step
from hybridgym.models.residual import MLPResidual, UnitResidual

ADAPTIVE_METHODS = ("dopri5", "bosh3", "dopri8")
METHODS = FIXED_STEP_METHODS + ADAPTIVE_METHODS
SENSITIVITIES = ("direct", "adjoint")
CHECKPOINT_FORMAT = "hybridgym.HybridODE"
CHECKPOINT_VERSION = 1

#: name -> function(spec dict) -> prior module; see :func:`register_prior_builder`
_PRIOR_BUILDERS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {}
#: residual classes a checkpoint may name (constructed from plain-typed config only)
_RESIDUALS: dict[str, Callable[..., nn.Module]] = {
    "MLPResidual": MLPResidual,
    "UnitResidual": UnitResidual,
}


def register_prior_builder(name: str, builder: Callable[[dict[str, Any]], nn.Module]) -> None:
    """Let :meth:`HybridODE.load` rebuild priors whose ``rebuild_spec["builder"] == name``.

    ``hybridgym.envs`` registers ``"task"`` (priors made by ``Task.make_prior``).
    """
    _PRIOR_BUILDERS[name] = builder


def register_residual(name: str, factory: Callable[..., nn.Module]) -> None:
    """Let checkpoints name a residual class (built from its ``config()`` dict)."""
    _RESIDUALS[name] = factory


def _dim_of(module: nn.Module | None, attr: str) -> int | None:
    return None if module is None else getattr(module, attr, None)


class _HeldAction(nn.Module):
    """The vector field with the action held, in torchdiffeq's ``f(t, x)`` form."""

    def __init__(self, model: HybridODE, u: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.u = u

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.model.vector_field(x, self.u)


#: fixed steps per control interval at most (10^8 ran until killed in issue 15's trial)
MAX_SUBSTEPS = 10_000


class HybridODE(nn.Module):
    """Known physics plus a learned residual, as a controlled ODE.

    ``dx/dt = prior(x, u) + mask * residual(x, u)``; either part may be None (prior-only, or a
    plain neural ODE), not both.

    Args:
        prior: a :class:`PhysicsPrior` or any module with ``forward(x, u) -> dx/dt``.
        residual: e.g. :class:`MLPResidual`.
        dt: control interval (the action is held over it), in the system's time unit.
        method: ``euler``, ``midpoint``, ``rk4`` (fixed step, ``substeps`` per interval; the same
            code integrates hybridgym's real systems) or ``dopri5``, ``bosh3``, ``dopri8``
            (adaptive, torchdiffeq, with ``rtol``/``atol``).
        substeps: fixed steps per interval.
        residual_mask: state dimensions the residual may change: None (all), a sequence of
            indices, or a boolean sequence of length n.
        sensitivity: ``direct`` (backpropagate through the solver) or ``adjoint`` (torchdiffeq's
            adjoint method, one solve per control interval: memory independent of the solver
            steps inside an interval and about 30x smaller per interval than ``direct``, at
            about 2.3x the time; see benchmarks/adjoint_vs_direct.py). With the adjoint,
            fixed-step methods run through torchdiffeq, whose ``rk4`` is the 3/8-rule variant:
            equal to ours up to O(h^5).
        state_dim, action_dim: needed only when neither part has these attributes.
    """

    def __init__(
        self,
        prior: nn.Module | None,
        residual: nn.Module | None,
        dt: float,
        *,
        method: str = "rk4",
        substeps: int = 1,
        residual_mask: Sequence[int] | Sequence[bool] | None = None,
        sensitivity: str = "direct",
        rtol: float = 1e-6,
        atol: float = 1e-8,
        state_dim: int | None = None,
        action_dim: int | None = None,
    ) -> None:
        super().__init__()
        if prior is None and residual is None:
            raise ValueError("a HybridODE needs a prior, a residual or both; got neither")
        if isinstance(dt, bool) or not isinstance(dt, int | float) or not dt > 0:
            raise ValueError(f"dt must be a positive number, got {dt!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
            raise ValueError(f"substeps must be a positive int, got {substeps!r}")
        if substeps > MAX_SUBSTEPS:
            raise ValueError(
                f"substeps must be at most {MAX_SUBSTEPS:,} per control interval, got "
                f"{substeps:,}; a stiff system wants an adaptive method (dopri5) instead"
            )
        if sensitivity not in SENSITIVITIES:
            raise ValueError(f"sensitivity must be one of {SENSITIVITIES}, got {sensitivity!r}")
        dims = {
            "state_dim": [state_dim, _dim_of(prior, "state_dim"), _dim_of(residual, "state_dim")],
            "action_dim": [
                action_dim,
                _dim_of(prior, "action_dim"),
                _dim_of(residual, "action_dim"),
            ],
        }
        resolved = {}
        for label, candidates in dims.items():
            known = {c for c in candidates if c is not None}
            if len(known) != 1:
                raise ValueError(
                    f"{label} is {'ambiguous' if known else 'unknown'} ({sorted(known)}); "
                    f"pass {label}= or give the prior/residual a {label} attribute"
                )
            resolved[label] = known.pop()
        self.state_dim: int = resolved["state_dim"]
        self.action_dim: int = resolved["action_dim"]
        self.prior = prior
        self.residual = residual
        self.dt = float(dt)
        self.method = method
        self.substeps = substeps
        self.sensitivity = sensitivity
        self.rtol = float(rtol)
        self.atol = float(atol)
        self.register_buffer("residual_mask", self._mask(residual_mask))

    def _mask(self, mask: Sequence[int] | Sequence[bool] | None) -> torch.Tensor:
        n = self.state_dim
        if mask is None:
            return torch.ones(n)
        values = list(mask.tolist() if isinstance(mask, torch.Tensor) else mask)
        if values and all(isinstance(v, bool) for v in values):
            if len(values) != n:
                raise ValueError(f"a boolean residual_mask needs {n} entries, got {len(values)}")
            return torch.tensor([float(v) for v in values])
        if any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n for v in values):
            raise ValueError(
                f"residual_mask must be state indices in [0, {n}) or {n} booleans, got {mask!r}"
            )
        out = torch.zeros(n)
        out[values] = 1.0
        return out

    # --- dynamics ------------------------------------------------------------------------------
    def prior_field(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The prior's dx/dt (zeros without a prior), B x n."""
        if self.prior is None:
            return torch.zeros_like(x)
        return self.prior(x, u)

    def residual_field(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The masked residual's dx/dt (zeros without a residual), B x n."""
        if self.residual is None:
            return torch.zeros_like(x)
        return self.residual(x, u) * self.residual_mask.to(x.dtype)

    def vector_field(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """dx/dt for states x (B x n) and actions u (B x m); B x n."""
        if self.prior is None:
            return self.residual_field(x, u)
        if self.residual is None:
            return self.prior(x, u)
        return self.prior(x, u) + self.residual_field(x, u)

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """States one control interval later, u held: B x n for x: B x n, u: B x m.

        Hard state limits the prior declares (``PhysicsPrior.limit_state``) are enforced on the
        result.
        """
        limit = getattr(self.prior, "apply_state_limits", None)
        out = self._integrate(x, u)
        if limit is None:
            return out
        # the integrator's result is a new tensor: without autograd it may be clamped in place
        return limit(out, in_place=not torch.is_grad_enabled())

    def _integrate(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self.method in FIXED_STEP_METHODS and self.sensitivity == "direct":
            return fixed_step(
                self.vector_field, x, u, self.dt, method=self.method, substeps=self.substeps
            )
        import torchdiffeq  # here: it imports scipy, which fixed-step users never need

        t = torch.tensor([0.0, self.dt], dtype=x.dtype, device=x.device)
        func = _HeldAction(self, u)
        options = (
            {"step_size": self.dt / self.substeps} if self.method in FIXED_STEP_METHODS else None
        )
        kwargs = {"method": self.method, "rtol": self.rtol, "atol": self.atol, "options": options}
        if self.sensitivity == "adjoint":
            params = tuple(p for p in self.parameters() if p.requires_grad)
            if u.requires_grad:
                params = (*params, u)
            return torchdiffeq.odeint_adjoint(func, x, t, adjoint_params=params, **kwargs)[-1]
        return torchdiffeq.odeint(func, x, t, **kwargs)[-1]

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Open-loop rollout.

        Args:
            x0: start states, B x n.
            actions: B x T x m.

        Returns:
            States B x (T+1) x n, starting with x0.
        """
        if actions.dim() != 3 or actions.shape[0] != x0.shape[0]:
            raise ValueError(
                f"actions must be B x T x m with B = {x0.shape[0]}, got {tuple(actions.shape)}"
            )
        states = [x0]
        x = x0
        for k in range(actions.shape[1]):
            x = self.step(x, actions[:, k])
            states.append(x)
        return torch.stack(states, dim=1)

    # --- checkpoints ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild the model, as plain types."""
        prior_cfg = None
        if self.prior is not None:
            prior_cfg = {
                "class": type(self.prior).__qualname__,
                "rebuild_spec": getattr(self.prior, "rebuild_spec", None),
            }
        residual_cfg = None
        if self.residual is not None:
            if not hasattr(self.residual, "config"):
                raise TypeError(
                    f"cannot save a residual of type {type(self.residual).__name__}: it needs a "
                    "config() method and register_residual()"
                )
            residual_cfg = {"class": type(self.residual).__name__, "kwargs": self.residual.config()}
        return {
            "prior": prior_cfg,
            "residual": residual_cfg,
            "dt": self.dt,
            "method": self.method,
            "substeps": self.substeps,
            "residual_mask": [bool(v) for v in self.residual_mask.tolist()],
            "rtol": self.rtol,
            "atol": self.atol,
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
        }

    def save(self, path: str | os.PathLike[str]) -> pathlib.Path:
        """Write config and weights to one file, atomically (temporary name, then rename)."""
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self.config(),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }
        return atomic_torch_save(payload, path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        prior: nn.Module | None = None,
        map_location: str | torch.device = "cpu",
    ) -> HybridODE:
        """Load a checkpoint written by :meth:`save`, executing no code from the file.

        Args:
            path: the checkpoint.
            prior: an instance of the saved prior's class, required for priors that are not
                built by a registered builder (e.g. your own ``PhysicsPrior`` subclass); its
                weights are replaced by the saved ones.
            map_location: device for the tensors.
        """
        payload = read_checkpoint(path, CHECKPOINT_FORMAT, map_location)
        model = cls.from_config(payload["config"], payload["state_dict"], prior=prior, source=path)
        return model.to(map_location)

    @classmethod
    def from_config(
        cls,
        cfg: dict[str, Any],
        state_dict: dict[str, torch.Tensor],
        *,
        prior: nn.Module | None = None,
        source: str | os.PathLike[str] = "<config>",
    ) -> HybridODE:
        """Rebuild a model from :meth:`config` and a state dict (see :meth:`load`)."""
        model = cls(
            _rebuild_prior(cfg["prior"], prior, source),
            _rebuild_residual(cfg["residual"], source),
            cfg["dt"],
            method=cfg["method"],
            substeps=cfg["substeps"],
            residual_mask=cfg["residual_mask"],
            rtol=cfg["rtol"],
            atol=cfg["atol"],
            state_dim=cfg["state_dim"],
            action_dim=cfg["action_dim"],
        )
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as err:
            raise ValueError(
                f"{source}: weights do not fit the saved configuration: {err}"
            ) from None
        return model

    def extra_repr(self) -> str:
        return (
            f"dt={self.dt:g}, method={self.method!r}, substeps={self.substeps}, "
            f"sensitivity={self.sensitivity!r}"
        )


def _rebuild_prior(
    cfg: dict[str, Any] | None, given: nn.Module | None, path: str | os.PathLike[str]
) -> nn.Module | None:
    if cfg is None:
        if given is not None:
            raise ValueError(f"{path} was saved without a prior, but prior= was given")
        return None
    if given is not None:
        if type(given).__qualname__ != cfg["class"]:
            raise ValueError(
                f"{path} holds a prior of class {cfg['class']}, but prior= is a "
                f"{type(given).__qualname__}"
            )
        return given
    spec = cfg.get("rebuild_spec")
    if not spec:
        raise ValueError(
            f"{path} holds a prior of class {cfg['class']} that hybridgym cannot rebuild; "
            f"pass prior={cfg['class']}(...) to HybridODE.load"
        )
    builder_name = spec.get("builder")
    if builder_name not in _PRIOR_BUILDERS and spec.get("module", "").startswith("hybridgym."):
        importlib.import_module(spec["module"])  # our own package registers its builders
    if builder_name not in _PRIOR_BUILDERS:
        raise ValueError(
            f"{path}: no prior builder {builder_name!r} is registered; pass prior= to load"
        )
    return _PRIOR_BUILDERS[builder_name](spec)


def _rebuild_residual(cfg: dict[str, Any] | None, path: str | os.PathLike[str]) -> nn.Module:
    if cfg is None:
        return None
    factory = _RESIDUALS.get(cfg["class"])
    if factory is None:
        raise ValueError(
            f"{path} holds a residual of class {cfg['class']!r}; known: {sorted(_RESIDUALS)}"
        )
    return factory(**cfg["kwargs"])


def atomic_torch_save(payload: Any, path: str | os.PathLike[str]) -> pathlib.Path:
    """``torch.save`` into memory, then :func:`atomic_write_bytes` (no partial files)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(
    path: str | os.PathLike[str], expected_format: str, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a hybridgym checkpoint with ``weights_only=True`` and check its format tag.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for anything that is not
    a checkpoint of ``expected_format`` (including pickles that would run code: they are
    refused by the weights-only unpickler before anything executes).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on foreign pickle protocols
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # untrusted bytes: any failure to parse means "not a checkpoint"
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path} is not a hybridgym checkpoint (or holds objects that are not plain "
            f"tensors and containers; nothing from it was executed): {first_line}"
        ) from None
    return check_tag(payload, path, expected_format, CHECKPOINT_VERSION, "checkpoint")


def check_tag(
    payload: Any, path: str | os.PathLike[str], expected_format: str, version: int, kind: str
) -> dict[str, Any]:
    """``payload`` if it is a dict tagged ``format=expected_format`` and ``version``; else a
    ``ValueError`` naming the file, what was found and what this hybridgym reads."""
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a {expected_format} {kind} (found {found!r})")
    if payload.get("version") != version:
        raise ValueError(
            f"{path} has {kind} version {payload.get('version')!r}; this hybridgym reads "
            f"version {version}"
        )
    return payload


def check_model_matches(
    model: Any, state_dim: int, action_dim: int, dt: float, where: Any, what: str
) -> None:
    """A ``ValueError`` naming ``where`` when ``model`` (a HybridODE or an Ensemble) has other
    state or action sizes or another control interval than ``what`` (a task's) needs: a file
    from another run, found before an index error deep inside a rollout."""
    first = model.members[0] if hasattr(model, "members") else model
    have = (first.state_dim, first.action_dim, float(first.dt))
    if have[:2] != (state_dim, action_dim) or not math.isclose(have[2], dt, rel_tol=1e-6):
        raise ValueError(
            f"{where} is a model of {have[0]} states and {have[1]} actions at dt {have[2]:g}, "
            f"but {what} has {state_dim} states and {action_dim} actions at dt {dt:g}: it "
            "belongs to another run; remove it or use that run's directory"
        )
