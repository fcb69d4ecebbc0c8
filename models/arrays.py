"""Helpers for functions that accept either numpy arrays or torch tensors.

The physics of each built-in system is written once and evaluated in two worlds: the real
environment integrates it in numpy float64 (fast for a single env, exact enough for reference
tests) and the models evaluate it in torch (batched, differentiable). Such functions call
:func:`array_namespace` on their input and use only operations that both namespaces spell the
same way (``sin``, ``cos``, ``tanh``, ``exp``, ``log``, ``stack``, ``concat``, ``where``,
``clip``, ``arctan2``, arithmetic and indexing).
"""

from __future__ import annotations

from types import ModuleType
from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def array_namespace(x: np.ndarray | torch.Tensor) -> ModuleType:
    """Return ``torch`` for a tensor and ``numpy`` for anything else."""
    return torch if isinstance(x, torch.Tensor) else np


def wrap_angle(angle: Array) -> Array:
    """Wrap angles to [-pi, pi), elementwise, for numpy arrays or torch tensors."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def unwrap_angles(states: np.ndarray, angle_dims: tuple[int, ...] | list[int]) -> np.ndarray:
    """States of one episode (T+1 x n) with the angle columns unwrapped over time, so that an
    angle that goes round keeps counting (a copy; float64)."""
    out = np.array(states, dtype=np.float64)
    for d in angle_dims:
        out[:, d] = np.unwrap(out[:, d])
    return out


def usable_device(name: str, what: str = "device", instead: str = "cpu") -> torch.device:
    """``name`` as a torch device this machine has, else a ``ValueError`` that names ``what``
    (e.g. ``"--device"``) and suggests ``instead``."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{what} {name!r} is not a torch device; use cpu or cuda") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            f"{what} {name!r}: hybridgym computes on cpu, cuda or mps, not on {device.type}; "
            f"use {instead}"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{what} {name}: torch sees no CUDA device here (torch.cuda.is_available() is "
            f"False); use {instead}"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{what} {name}: MPS is not available here; use {instead}")
    return device


def lasting_tensor(values: object, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A constant tensor for a cache that outlives the call: an ordinary tensor even when made
    under ``torch.inference_mode`` (an inference tensor would break autograd later)."""
    with torch.inference_mode(False), torch.no_grad():
        return torch.as_tensor(values, dtype=dtype, device=device).clone()


def uniform(
    n: int,
    low: np.ndarray,
    high: np.ndarray,
    generator: np.random.Generator | torch.Generator | None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> np.ndarray | torch.Tensor:
    """Draw ``n`` samples uniformly from the box [low, high].

    Args:
        n: number of samples.
        low, high: bounds, shape (d,).
        generator: a ``numpy.random.Generator`` (returns float64 numpy, shape n x d) or a
            ``torch.Generator`` / ``None`` (returns a torch tensor, shape n x d, of ``dtype``).
        dtype, device: for the torch result only.
    """
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    if isinstance(generator, np.random.Generator):
        return low + (high - low) * generator.random((n, low.shape[0]))
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            "generator must be a numpy.random.Generator, a torch.Generator or None, "
            f"got {type(generator).__name__}"
        )
    gen_device = generator.device if generator is not None else device
    u = torch.rand((n, low.shape[0]), generator=generator, dtype=torch.float64, device=gen_device)
    lo = torch.as_tensor(low, device=u.device)
    hi = torch.as_tensor(high, device=u.device)
    return (lo + (hi - lo) * u).to(dtype=dtype, device=device or u.device)


def normal(
    n: int,
    d: int,
    generator: np.random.Generator | torch.Generator | None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> np.ndarray | torch.Tensor:
    """Draw an n x d array of standard normals from a numpy or torch generator (see `uniform`)."""
    if isinstance(generator, np.random.Generator):
        return generator.standard_normal((n, d))
    gen_device = generator.device if generator is not None else device
    z = torch.randn((n, d), generator=generator, dtype=torch.float64, device=gen_device)
    return z.to(dtype=dtype, device=device or z.device)
