"""Where a comparison's trials run: ``"local"`` or ``"ray"``.

- ``local`` (the default; nothing to install): one trial after the other in this process
  (:meth:`Comparison.run_trial <hybridgym.agents.compare.Comparison.run_trial>`).
- ``ray`` (``pip install 'hybridgym[ray]'``): every pending (method, seed) trial is a Ray task
  (one CPU) that runs :func:`trial_in_worker` in a worker process: one torch thread, the
  trial seeded exactly as it is locally, its run directory written by the worker (a loop trial's
  ``OUT/loop/seed_S``; a model-free trial writes nothing). The tasks return their records and
  this process gathers them as they finish (``ray.wait``) and records each through
  :meth:`Comparison.record_trial <hybridgym.agents.compare.Comparison.record_trial>`, the same
  code path as the local backend: ``results.json`` is rewritten atomically after every
  finished trial, with the trials in a fixed order, so it is the same file whichever order
  they finish in and whichever backend ran them (apart from measured times and the
  ``backend`` entry).

Ray is imported only by the ray backend. Without an address it connects as ``ray.init`` does:
to ``RAY_ADDRESS`` when set, else to a cluster started on this machine with ``ray start``,
else it starts a local instance (no dashboard) for this comparison and stops it at the end.
On a cluster of several machines, every node needs hybridgym installed and the output folder
on a file system they all see at the same path.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import torch

from hybridgym.agents.compare import CompareConfig, Comparison
from hybridgym.agents.trials import run_trial

BACKENDS = ("local", "ray")
#: how to install what the ray backend needs
RAY_INSTALL = "pip install 'hybridgym[ray]'"

#: called with (method, seed): local, before the trial runs; ray, when it is submitted
OnStart = Callable[[str, int], None]
#: called with (method, seed, record) once the trial is recorded in results.json
OnFinish = Callable[[str, int, dict[str, Any]], None]


def check_backend(backend: str, address: str | None = None) -> None:
    """Refuse an unknown backend, an address for the local one, or the ray backend where Ray
    is not installed; called before anything runs.

    Raises:
        ValueError: unknown backend, or ``address`` with ``backend="local"``.
        ImportError: ``backend="ray"`` and Ray is not installed (the message says how to
            install it).
    """
    if backend not in BACKENDS:
        close = difflib.get_close_matches(str(backend), BACKENDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}{hint}")
    if address is not None and backend != "ray":
        raise ValueError(
            f"an address ({address!r}) is for the ray backend only; choose backend 'ray' or "
            "leave the address out"
        )
    if backend == "ray":
        import_ray()


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(
            f"the ray backend needs Ray, which is not installed: {RAY_INSTALL}"
        ) from err
    return ray


def trial_in_worker(config: dict[str, Any], out: str, method: str, seed: int) -> dict[str, Any]:
    """One trial in a worker process: :func:`~hybridgym.agents.trials.run_trial` with one torch
    thread, for the configuration ``config`` (``CompareConfig.to_dict()``) and the output
    folder ``out`` (absolute: a worker's working directory is not the driver's)."""
    torch.set_num_threads(1)
    return run_trial(CompareConfig(**config), out, method, seed)


def run_pending(
    comparison: Comparison,
    *,
    backend: str = "local",
    address: str | None = None,
    on_start: OnStart | None = None,
    on_finish: OnFinish | None = None,
) -> list[tuple[str, int]]:
    """Run the comparison's pending trials on ``backend``, recording each in ``results.json``
    as it finishes; the reports are left to :meth:`Comparison.write_reports`.

    Args:
        comparison: what to run; its recorded trials are skipped (resuming).
        backend: ``"local"`` or ``"ray"``.
        address: ray only: the Ray cluster, e.g. ``"10.0.0.5:6379"`` or ``"ray://host:10001"``
            (None: ``RAY_ADDRESS``, a ``ray start`` cluster on this machine, else a new local
            instance). Where Ray is already initialised in this process, that connection is
            used and ``address`` must be None.
        on_start, on_finish: progress callbacks (see :data:`OnStart`, :data:`OnFinish`).

    Returns:
        The (method, seed) of the trials run.

    Raises:
        RuntimeError: ray: some trials failed; every other one is recorded (rerun to retry
            the failed ones). The first failure is the cause.
    """
    check_backend(backend, address)
    pending = comparison.pending()
    if backend == "local":
        for method, seed in pending:
            if on_start is not None:
                on_start(method, seed)
            trial = comparison.run_trial(method, seed)
            if on_finish is not None:
                on_finish(method, seed, trial)
    elif pending:
        _run_on_ray(comparison, pending, address, on_start, on_finish)
    return pending


def _run_on_ray(
    comparison: Comparison,
    pending: list[tuple[str, int]],
    address: str | None,
    on_start: OnStart | None,
    on_finish: OnFinish | None,
) -> None:
    with ray_connection(address) as ray:
        cluster = {
            "name": "ray",
            "address": getattr(ray.get_runtime_context(), "gcs_address", None),
            "nodes": sum(1 for node in ray.nodes() if node.get("Alive")),
            "cpus": ray.cluster_resources().get("CPU", 0),
        }
        comparison.write_settings(cluster)
        comparison.say(
            f"Ray at {cluster['address']}: {cluster['nodes']} node(s), {cluster['cpus']:g} CPUs; "
            f"{len(pending)} trials, one CPU each"
        )
        remote = ray.remote(num_cpus=1)(trial_in_worker)
        config, out = comparison.config.to_dict(), str(comparison.out.resolve())
        trials = {}
        for method, seed in pending:
            ref = remote.options(name=f"hybridgym compare {method} seed {seed}").remote(
                config, out, method, seed
            )
            trials[ref] = (method, seed)
            comparison.say(f"{method}, seed {seed}: submitted to Ray")
            if on_start is not None:
                on_start(method, seed)
        failed = []
        waiting = list(trials)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            for ref in done:
                method, seed = trials[ref]
                try:
                    trial = ray.get(ref)
                except ray.exceptions.RayError as err:
                    cause = getattr(err, "cause", None) or err
                    failed.append((method, seed, cause))
                    comparison.say(f"{method}, seed {seed}: failed: {_first_line(cause)}")
                    continue
                comparison.record_trial(method, seed, trial)
                if on_finish is not None:
                    on_finish(method, seed, trial)
    if failed:
        names = ", ".join(f"{method} seed {seed}" for method, seed, _ in failed)
        method, seed, cause = failed[0]
        raise RuntimeError(
            f"{len(failed)} of {len(pending)} trials failed on Ray ({names}; {method} seed "
            f"{seed}: {_first_line(cause)}); the others are recorded in {comparison.path}: "
            "rerun the same comparison to retry the failed ones"
        ) from cause


@contextlib.contextmanager
def ray_connection(address: str | None = None) -> Iterator[Any]:
    """Connect to Ray for the ``with`` block and yield the ``ray`` module; at the end,
    disconnect (stopping the tasks of this process) where this call connected. Where Ray is
    already initialised in this process, that connection is used (``address`` must be None).

    Raises:
        ImportError: Ray is not installed.
        ValueError: ``address`` is not an address, nothing answers there, or it is given while
            Ray is already initialised.
    """
    ray = import_ray()
    connected_here = _connect(ray, address)
    try:
        yield ray
    finally:
        if connected_here:
            ray.shutdown()


def _connect(ray: Any, address: str | None) -> bool:
    """Connect to Ray unless this process already is; True where this call connected."""
    if ray.is_initialized():
        if address is not None:
            raise ValueError(
                f"Ray is already initialised in this process, so address {address!r} cannot "
                "be used; leave it out to use that connection, or call ray.shutdown() first"
            )
        return False
    kwargs: dict[str, Any] = {"address": address, "logging_level": logging.WARNING}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs["include_dashboard"] = False  # where ray.init starts a local instance
    where = address or os.environ.get("RAY_ADDRESS")
    try:
        if where is not None:
            _check_reachable(where)
        ray.init(**kwargs)
    except (ConnectionError, ValueError) as err:  # no cluster there, or not an address
        raise ValueError(
            f"could not connect to Ray at {where!r} ({_first_line(err)}); give the address "
            "that `ray start --head` printed (HOST:PORT, or ray://HOST:PORT for Ray Client), "
            "or none to start a local instance"
        ) from None
    return True


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Raise ConnectionError at once where nothing listens at a HOST:PORT ``address`` (Ray
    itself retries for minutes); anything else (``auto``, ``local``, a malformed address) is
    left to ``ray.init``."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(f"nothing answers at {host}:{port} ({err})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"
