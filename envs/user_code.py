"""Code a user names on the command line: ``path/to/file.py:Name`` or ``package.module:Name``.

One loader for priors (``--prior``), rewards (``--reward``) and terminations
(``--terminated``). Whatever goes wrong in the user's code (a syntax error, an exception at
import, in ``__init__`` or in a test call, a missing name, a wrong kind of object, wrong sizes
or shapes) becomes one ``ValueError`` line that names the file and the line, so the command
line can print it without a traceback.

A prior class is constructed with no arguments (give its parameters defaults, as the
README's ``Oscillator`` does) and must be a ``torch.nn.Module`` with ``forward(x, u)``
returning dx/dt (B x n for x: B x n, u: B x m), usually a
:class:`~hybridgym.models.PhysicsPrior`; its ``state_dim`` and ``action_dim`` (where it has
them) must match the system's. A reward is ``reward(state, action, next_state) -> B`` on torch
batches, a termination ``terminated(next_state) -> B`` (bool).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import pathlib
import sys
import traceback
from collections.abc import Callable
from typing import Any

import torch


def split_spec(spec: str, option: str) -> tuple[str, str]:
    """``"file.py:Name"`` or ``"module:Name"`` -> (source, name), or a ValueError saying the
    form."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(
            f"{option} must be FILE.py:NAME or MODULE:NAME (e.g. priors/cartpole.py:CartPole), "
            f"got {spec!r}"
        )
    source, _, name = spec.rpartition(":")
    if not source or not name.isidentifier():
        raise ValueError(
            f"{option} must be FILE.py:NAME or MODULE:NAME with NAME a Python name, got {spec!r}"
        )
    return source, name


def _where(error: BaseException, source: str) -> str:
    """``file line N`` of the deepest traceback frame in ``source`` (a file path), else of the
    deepest frame; a syntax error's own file and line."""
    if isinstance(error, SyntaxError) and error.filename:
        return f"{error.filename} line {error.lineno}"
    frames = traceback.extract_tb(error.__traceback__)
    target = str(pathlib.Path(source).resolve()) if source.endswith(".py") else None
    mine = [f for f in frames if target is not None and _same_file(f.filename, target)]
    frame = (mine or frames or [None])[-1]
    if frame is None:
        return source
    return f"{frame.filename} line {frame.lineno}"


def _same_file(a: str, b: str) -> bool:
    try:
        return pathlib.Path(a).resolve() == pathlib.Path(b)
    except OSError:
        return False


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(error, SyntaxError):
        message = error.msg
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _import_source(source: str, option: str) -> Any:
    """The module of a ``.py`` path (imported under a name of its own) or an importable name."""
    if source.endswith(".py"):
        path = pathlib.Path(source)
        if not path.is_file():
            raise ValueError(f"{option}: {source} does not exist (give FILE.py:NAME)")
        # the name holds the path and the content: an edited file is imported afresh
        digest = hashlib.sha1(str(path.resolve()).encode() + path.read_bytes()).hexdigest()[:12]
        module_name = f"hybridgym_user_{path.stem}_{digest}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as error:  # a KeyboardInterrupt stays one
            del sys.modules[module_name]
            raise ValueError(
                f"{option}: {_where(error, source)}: importing {source} failed: {_describe(error)}"
            ) from None
        return module
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as error:
        if error.name and source.split(".")[0] == error.name.split(".")[0]:
            raise ValueError(
                f"{option}: no module {source!r} (give FILE.py:NAME for a file, or a module "
                "importable from here)"
            ) from None
        raise ValueError(
            f"{option}: {_where(error, source)}: importing {source} failed: {_describe(error)}"
        ) from None
    except Exception as error:
        raise ValueError(
            f"{option}: {_where(error, source)}: importing {source} failed: {_describe(error)}"
        ) from None


def _file_of(source: str, module: Any) -> str:
    return source if source.endswith(".py") else getattr(module, "__file__", source) or source


def load_object(spec: str, option: str) -> tuple[Any, str]:
    """The object ``NAME`` of ``FILE.py:NAME`` / ``MODULE:NAME`` and the file it lives in.

    Raises:
        ValueError: one line naming the file (and line) for any failure.
    """
    source, name = split_spec(spec, option)
    module = _import_source(source, option)
    if not hasattr(module, name):
        defined = sorted(
            key
            for key, value in vars(module).items()
            if not key.startswith("_")
            and (inspect.isclass(value) or inspect.isfunction(value))
            and getattr(value, "__module__", None) == module.__name__
        )
        listing = ", ".join(defined) if defined else "no classes or functions"
        raise ValueError(
            f"{option}: {_file_of(source, module)} has no {name!r}; it defines {listing}"
        )
    return getattr(module, name), _file_of(source, module)


def _line_of(obj: Any, file: str) -> str:
    try:
        return f"{file} line {inspect.getsourcelines(obj)[1]}"
    except (OSError, TypeError):
        return file


def call_user(
    function: Callable[..., Any], what: str, file: str, *args: Any, option: str | None = None
) -> Any:
    """``function(*args)``; an exception becomes one line naming where in ``file`` it arose
    (after ``option``, e.g. ``--prior``, where given)."""
    try:
        return function(*args)
    except Exception as error:
        prefix = f"{option}: " if option else ""
        where = _where(error, file)
        raise ValueError(f"{prefix}{where}: {what} raised {_describe(error)}") from None


def load_prior_factory(
    spec: str, state_dim: int, action_dim: int, option: str = "--prior"
) -> Callable[[], torch.nn.Module]:
    """A function that builds a fresh prior from ``spec``, checked on a test batch.

    The class is constructed with no arguments; it must be a ``torch.nn.Module`` whose
    ``forward(x, u)`` maps B x ``state_dim`` states and B x ``action_dim`` actions to B x
    ``state_dim`` finite derivatives; ``state_dim`` / ``action_dim`` attributes, where it has
    them, must match.

    Raises:
        ValueError: one line naming the file and line.
    """
    cls, file = load_object(spec, option)
    where = _line_of(cls, file)
    name = getattr(cls, "__name__", repr(cls))
    if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)):
        raise ValueError(
            f"{option}: {where}: {name} is not a class derived from torch.nn.Module (a "
            "PhysicsPrior subclass with forward(x, u) -> dx/dt)"
        )
    if cls.forward is torch.nn.Module.forward:
        raise ValueError(f"{option}: {where}: {name} has no forward(x, u) method")
    try:
        inspect.signature(cls).bind()
    except TypeError:
        raise ValueError(
            f"{option}: {where}: {name}() needs arguments {inspect.signature(cls)}; a prior "
            "named on the command line is built with none: give every parameter a default"
        ) from None

    def build() -> torch.nn.Module:
        return call_user(cls, f"{name}()", file, option=option)

    prior = build()
    check_prior(prior, state_dim, action_dim, option=option, where=where, file=file)
    return build


def check_prior(
    prior: torch.nn.Module,
    state_dim: int,
    action_dim: int,
    *,
    option: str = "prior",
    where: str | None = None,
    file: str | None = None,
) -> None:
    """Sizes and a test batch of a prior: ``forward`` must give B x n finite values.

    Args:
        prior: the module.
        state_dim, action_dim: the system's n and m.
        option: what names the prior in messages (``--prior``).
        where: the file and line of its class (default: its class's source, if known).
        file: the file it comes from (an exception is located in it).

    Raises:
        ValueError: one line, ``OPTION: FILE line N: ...``.
    """
    name = type(prior).__name__
    file = file or inspect.getsourcefile(type(prior)) or name
    where = where or _line_of(type(prior), file)
    label = f"{option}: {where}"
    for attr, wanted in (("state_dim", state_dim), ("action_dim", action_dim)):
        have = getattr(prior, attr, None)
        if have is not None and have != wanted:
            raise ValueError(
                f"{label}: {name} has {attr} {have}, but the system has {wanted} "
                f"{'state variables' if attr == 'state_dim' else 'actions'}"
            )
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, state_dim, generator=generator) * 0.1
    u = torch.randn(8, action_dim, generator=generator) * 0.1
    x, u = x.to(_dtype_of(prior)), u.to(_dtype_of(prior))
    with torch.no_grad():
        what = f"{name}.forward on a test batch (x: 8 x {state_dim})"
        out = call_user(prior, what, file, x, u, option=option)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (8, state_dim):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"{label}: {name}.forward(x, u) returned {shape} for x of shape (8, {state_dim}) and "
            f"u of shape (8, {action_dim}); it must return dx/dt of shape (8, {state_dim})"
        )
    if not bool(torch.isfinite(out).all()):
        raise ValueError(
            f"{label}: {name}.forward(x, u) returned non-finite values on a test batch"
        )


def _dtype_of(module: torch.nn.Module) -> torch.dtype:
    tensor = next(iter([*module.parameters(), *module.buffers()]), None)
    return tensor.dtype if tensor is not None and tensor.is_floating_point() else torch.float32


def load_function(
    spec: str,
    option: str,
    state_dim: int,
    action_dim: int,
    kind: str,
) -> Callable[..., Any]:
    """A reward (``kind="reward"``) or termination (``kind="terminated"``) function from
    ``spec``, checked on a test batch of 8 rows: it must return 8 finite numbers (reward) or 8
    booleans (termination), as a torch tensor.

    Raises:
        ValueError: one line naming the file and line.
    """
    function, file = load_object(spec, option)
    name = getattr(function, "__name__", repr(function))
    if not callable(function):
        raise ValueError(f"{option}: {file}: {name} is not a function")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, state_dim, generator=generator) * 0.1
    u = torch.randn(8, action_dim, generator=generator) * 0.1
    x_next = x + 0.01 * torch.randn(8, state_dim, generator=generator)
    where = _line_of(function, file)
    if kind == "reward":
        what = f"{name}(state, action, next_state) on a test batch"
        out = call_user(function, what, file, x, u, x_next, option=option)
        signature = "reward(state, action, next_state)"
    else:
        what = f"{name}(next_state) on a test batch"
        out = call_user(function, what, file, x_next, option=option)
        signature = "terminated(next_state)"
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (8,):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"{option}: {where}: {signature} returned {shape} for a batch of 8 rows; it must "
            "return a torch tensor of shape (8,), one value per row"
        )
    if kind == "reward" and not bool(torch.isfinite(out).all()):
        raise ValueError(f"{option}: {where}: {signature} returned non-finite rewards")
    return function
