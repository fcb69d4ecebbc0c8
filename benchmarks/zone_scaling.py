"""Cost of DataCenter-v0 hybrid models against the number of zones: sparse against dense coupling.

For 4, 16, 64 and 256 zones, three hybrid models (rk4, one step per 5-minute interval):

* ``row``: the library's model, ``Task.make_prior()`` + ``Task.make_residual()``: the RC prior
  with the zones coupled through a sparse neighbour table (a row; 4 learnable constants) and a
  ``UnitResidual``, one 2x32 tanh network shared by the zones;
* ``grid``: the same on a square grid of zones (``topology="grid"``, 2x2 ... 16x16);
* ``dense``, the baseline: a prior whose coupling is a learnable n x n conductance matrix applied
  as a dense product (n^2 + 3 parameters), and a whole-state 2x32 MLP residual
  (``make_residual(structured=False)``), what one writes without using the room's structure.

Measured in one process on one torch thread, as process CPU time (the machine is shared and
other jobs steal wall time; wall time is recorded too, in the ``*_wall_*`` fields):

1. fit seconds per Adam iteration: ``models.fit`` on 96 recorded steps (random cooling), 64
   windows of 8 steps per iteration, no curriculum, no validation split; (time of ``fit`` with
   6 iterations - time with 0 iterations) / 6, median of 5 repeats;
2. learned-env steps per second: ``LearnedCore`` with 256 environments (one batched step is
   256 env-steps), median of 5 windows of 0.5 s;
3. the hybrid model's parameter count.

The growth exponent is the log-log slope of cost (fit seconds per iteration, seconds per env
step, parameters) between 16 and 256 zones: 1 is linear, 2 quadratic. ``--quick`` runs one
short repeat of everything and writes nothing. Otherwise prints a table and writes
benchmarks/results/zone_scaling.json.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time

import numpy as np
import torch

from hybridgym.envs import LearnedCore, get_task
from hybridgym.envs.systems.datacenter import (
    CAPACITANCE,
    COOLING_GAIN,
    NEIGHBOUR_COUPLING,
    OUTSIDE_COUPLING,
    DataCenterTask,
    datacenter_vector_field,
)
from hybridgym.models import FitConfig, HybridODE, PhysicsPrior, TrajectoryDataset, fit
from hybridgym.models.topology import Topology

from common import write

torch.set_num_threads(1)

ZONES = (4, 16, 64, 256)
MODELS = ("row", "grid", "dense")
NUM_ENVS = 256
STEPS, WINDOWS, HORIZON = 96, 64, 8  # recorded steps, windows per iteration, window length
FULL = {"repeats": 5, "seconds": 0.5, "iterations": 6}
QUICK = {"repeats": 1, "seconds": 0.1, "iterations": 2}


class DenseCouplingPrior(PhysicsPrior):
    """The DataCenter prior with the zone coupling as a learnable n x n conductance matrix K:
    coupling_i = sum_j K_ij (T_j - T_i), one dense n x n product per evaluation. K starts as
    the task's neighbour conductances (30 % low, like the other constants)."""

    def __init__(self, task: DataCenterTask, scale: float = 0.7) -> None:
        n = task.num_zones
        super().__init__(state_dim=2 * n + 2, action_dim=n)
        self.add_constant("capacitance", CAPACITANCE * scale, positive=True)
        self.add_constant("cooling_gain", COOLING_GAIN * scale, positive=True)
        self.add_constant("outside_coupling", OUTSIDE_COUPLING * scale, positive=True)
        adjacency = (task.topology.laplacian() > 0).astype(np.float32)
        self.conductance = torch.nn.Parameter(
            torch.as_tensor(adjacency * NEIGHBOUR_COUPLING * scale)
        )
        self.uncoupled = Topology(n, [])

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        c, n = self.constants(), self.action_dim
        laplacian = self.conductance - torch.diag(self.conductance.sum(1))
        field = datacenter_vector_field(
            x,
            u,
            capacitance=c["capacitance"],
            cooling_gain=c["cooling_gain"],
            neighbour_coupling=0.0,
            outside_coupling=c["outside_coupling"],
            recirculation=0.0,
            saturation=0.0,
            topology=self.uncoupled,
        )
        coupling = x[..., :n] @ laplacian.T / c["capacitance"]
        return torch.cat([field[..., :n] + coupling, field[..., n:]], -1)


def build(kind: str, zones: int) -> tuple[DataCenterTask, HybridODE]:
    side = math.isqrt(zones)
    if kind == "grid":
        task = get_task("datacenter", num_zones=zones, topology="grid", rows=side)
    else:
        task = get_task("datacenter", num_zones=zones)
    torch.manual_seed(0)
    if kind == "dense":
        prior, residual = DenseCouplingPrior(task), task.make_residual(structured=False)
    else:
        prior, residual = task.make_prior(), task.make_residual()
    return task, HybridODE(prior, residual, dt=task.dt)


class Clocks:
    """Process CPU time and wall time together. This machine is shared (other jobs compete for
    its 2 cores), so the table uses CPU time, which a job descheduled by the others does not
    accumulate; with one torch thread it equals wall time on an idle machine. Both are kept."""

    def __init__(self) -> None:
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def elapsed(self) -> tuple[float, float]:
        return time.process_time() - self.cpu, time.perf_counter() - self.wall


def fit_seconds_per_iteration(
    model: HybridODE, data: TrajectoryDataset, repeats: int, iterations: int
) -> tuple[float, float]:
    """Median over repeats of (fit with ``iterations`` - fit with 0) / ``iterations``: CPU
    seconds, wall seconds."""

    def timed(n: int) -> tuple[float, float]:
        config = FitConfig(
            horizon=HORIZON,
            iterations=n,
            batch_size=WINDOWS,
            curriculum=0.0,
            lr_schedule="constant",
            validation_fraction=0.0,
            patience=None,
            lbfgs_iterations=0,
            residual_penalty=0.0,
            physics_first=False,
            validation_horizons=(1,),
            progress=False,
        )
        clocks = Clocks()
        report = fit(model, data, config)
        assert report.non_finite_steps == 0, "a diverging fit would skip the backward pass"
        return clocks.elapsed()

    timed(1)  # warm-up (and the residual's input statistics)
    samples = []
    for _ in range(repeats):
        (cpu_n, wall_n), (cpu_0, wall_0) = timed(iterations), timed(0)
        samples.append(((cpu_n - cpu_0) / iterations, (wall_n - wall_0) / iterations))
    return statistics.median(c for c, _ in samples), statistics.median(w for _, w in samples)


def env_steps_per_second(
    task: DataCenterTask, model: HybridODE, repeats: int, seconds: float
) -> tuple[float, float]:
    """Median over ``repeats`` windows of ``seconds`` CPU time: env-steps per CPU second, per
    wall second."""
    core = LearnedCore(model, task, NUM_ENVS)
    core.reset_envs(np.arange(NUM_ENVS))
    actions = torch.full((NUM_ENVS, task.num_zones), 0.5)

    def step() -> None:
        core.step(actions)
        if core.needs_reset.any():
            core.reset_envs(np.flatnonzero(core.needs_reset))

    step()  # warm-up
    cpu_rates, wall_rates = [], []
    for _ in range(repeats):
        calls, clocks = 0, Clocks()
        while (elapsed := clocks.elapsed())[0] < seconds:
            step()
            calls += 1
        cpu_rates.append(calls * NUM_ENVS / elapsed[0])
        wall_rates.append(calls * NUM_ENVS / elapsed[1])
    return statistics.median(cpu_rates), statistics.median(wall_rates)


def exponent(rows: list[dict], kind: str, key: str, low: int, high: int) -> float:
    """log-log slope of the cost ``key`` of model ``kind`` between ``low`` and ``high`` zones
    (the cost of ``env_steps_per_s`` is its inverse)."""
    by_zones = {r["zones"]: r[key] for r in rows if r["model"] == kind}
    ratio = by_zones[high] / by_zones[low]
    if key == "env_steps_per_s":
        ratio = 1.0 / ratio
    return math.log(ratio) / math.log(high / low)


def growth(rows: list[dict], low: int, high: int) -> dict[str, dict[str, float]]:
    return {
        kind: {
            "fit_s_per_iteration": exponent(rows, kind, "fit_s_per_iteration", low, high),
            "s_per_env_step": exponent(rows, kind, "env_steps_per_s", low, high),
            "parameters": exponent(rows, kind, "parameters", low, high),
        }
        for kind in MODELS
    }


def measure(zones: int, settings: dict[str, float]) -> list[dict]:
    rows = []
    for kind in MODELS:
        task, model = build(kind, zones)
        data = TrajectoryDataset.collect(task.make_real_env(), task, steps=STEPS, seed=0)
        fit_cpu, fit_wall = fit_seconds_per_iteration(
            model, data, settings["repeats"], settings["iterations"]
        )
        env_cpu, env_wall = env_steps_per_second(
            task, model, settings["repeats"], settings["seconds"]
        )
        row = {
            "zones": zones,
            "model": kind,
            "parameters": sum(p.numel() for p in model.parameters()),
            "fit_s_per_iteration": fit_cpu,
            "env_steps_per_s": env_cpu,
            "fit_wall_s_per_iteration": fit_wall,
            "env_steps_per_wall_s": env_wall,
        }
        rows.append(row)
        print(
            f"  {zones:4d} zones {kind:5s}: {row['parameters']:9,d} parameters, fit "
            f"{row['fit_s_per_iteration'] * 1e3:8.1f} ms/iteration, "
            f"{row['env_steps_per_s']:9,.0f} env-steps/s",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short repeat, no JSON")
    parser.add_argument(
        "--zones",
        type=int,
        nargs="+",
        default=list(ZONES),
        help="zone counts, perfect squares (default 4 16 64 256); another list writes "
        "zone_scaling_<counts>.json",
    )
    args = parser.parse_args()
    zone_counts = tuple(sorted(set(args.zones)))
    if len(zone_counts) < 2 or any(math.isqrt(z) ** 2 != z for z in zone_counts):
        parser.error("--zones needs at least two perfect squares (square grids), e.g. 16 256")
    settings = QUICK if args.quick else FULL
    rows = [row for zones in zone_counts for row in measure(zones, settings)]
    # the headline exponent: 16 -> 256 zones (the smallest and largest counts otherwise)
    low = 16 if 16 in zone_counts and max(zone_counts) > 16 else zone_counts[0]
    high = 256 if 256 in zone_counts and low < 256 else zone_counts[-1]
    headline = growth(rows, low, high)
    steps = {f"{a}_to_{b}": growth(rows, a, b) for a, b in itertools.pairwise(zone_counts)}
    print_table(rows, zone_counts)
    print(f"growth exponent of cost, {low} -> {high} zones (1 = linear, 2 = quadratic):")
    for kind, g in headline.items():
        print(
            f"  {kind:5s}: fit {g['fit_s_per_iteration']:.2f}, env step "
            f"{g['s_per_env_step']:.2f}, parameters {g['parameters']:.2f}"
        )
    if args.quick:
        print("quick mode: nothing written")
        return
    payload = {
        "settings": {
            **settings,
            "zones": zone_counts,
            "num_envs": NUM_ENVS,
            "recorded_steps": STEPS,
            "windows_per_iteration": WINDOWS,
            "horizon": HORIZON,
            "torch_threads": torch.get_num_threads(),
            "clock": "process CPU time (wall time in the *_wall_* fields)",
        },
        "rows": rows,
        "growth_exponent": {"zones": [low, high], **headline},
        "growth_exponent_by_step": steps,
    }
    name = (
        "zone_scaling"
        if zone_counts == ZONES
        else "zone_scaling_" + "_".join(map(str, zone_counts))
    )
    print("wrote", write(name, payload))


def print_table(rows: list[dict], zone_counts: tuple[int, ...]) -> None:
    by = {(r["zones"], r["model"]): r for r in rows}
    print(
        f"{'zones':>5s} | {'params row/grid/dense':>24s} | {'fit ms/iter row/grid/dense':>28s}"
        f" | {'env-steps/s row/grid/dense':>30s} | dense cost / row cost: fit, env step"
    )
    for zones in zone_counts:
        r, g, d = (by[(zones, k)] for k in MODELS)
        params = f"{r['parameters']:,}/{g['parameters']:,}/{d['parameters']:,}"
        fits = "/".join(f"{x['fit_s_per_iteration'] * 1e3:.1f}" for x in (r, g, d))
        envs = "/".join(f"{x['env_steps_per_s']:,.0f}" for x in (r, g, d))
        fit_ratio = d["fit_s_per_iteration"] / r["fit_s_per_iteration"]
        env_ratio = r["env_steps_per_s"] / d["env_steps_per_s"]
        print(
            f"{zones:5d} | {params:>24s} | {fits:>28s} | {envs:>30s} | "
            f"{fit_ratio:.2f}, {env_ratio:.2f}"
        )


if __name__ == "__main__":
    main()
