"""``hybridgym/DataCenter-v0``: inlet temperatures of rack zones (a row, or a grid of rows) under
cooling control.

Units: temperature in degrees C, heat in kW, time in hours, thermal capacitance in kWh/K.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces

from hybridgym.envs.system_env import SystemEnv
from hybridgym.envs.task import Task, register_task
from hybridgym.models import PhysicsPrior, UnitResidual
from hybridgym.models.arrays import Array, array_namespace, normal, uniform
from hybridgym.models.topology import Topology

CAPACITANCE = 0.5  # kWh/K per zone (air and rack thermal mass)
COOLING_GAIN = 4.0  # kW/K removed per K of (inlet - supply) at full effort
SUPPLY_TEMP = 16.0  # C, cooling supply air
NEIGHBOUR_COUPLING = 0.5  # kW/K between adjacent zones
OUTSIDE_COUPLING = 0.3  # kW/K to outside air
OUTSIDE_MEAN, OUTSIDE_AMPLITUDE = 22.0, 6.0  # C; coldest at midnight
NOMINAL_LOAD = 20.0  # kW of IT load per zone
LOAD_MEAN, LOAD_AMPLITUDE = 0.7, 0.25  # daily profile: 0.45 at midnight, 0.95 at noon
OMEGA = 2.0 * math.pi / 24.0  # rad/h, one day
RECIRCULATION = 0.15  # truth only: hot-air recirculation heat = 0.15 q^2 / NOMINAL_LOAD
SATURATION = 3.0  # truth only: effectiveness (1 - exp(-3 u)) / (1 - exp(-3))
LOAD_NOISE_CORRELATION = 0.9  # per step, AR(1) of the log load multiplier
LOAD_NOISE_CLIP = math.log(2.0)  # the multiplier stays within [1/2, 2]
MAX_INLET = 27.0  # C, ASHRAE recommended upper limit
COOLING_POWER = 12.0  # kW electrical per zone at full effort
OVERHEAT_WEIGHT = 1.0  # reward penalty per K above MAX_INLET, per zone and step
DT_HOURS = 5.0 / 60.0
TOPOLOGIES = ("row", "grid")  # zone layouts DataCenterTask and DataCenterEnv accept by name


def load_profile(cos_tod: Array) -> Array:
    """Fraction of nominal IT load at the time of day with cos(2 pi t / 24h) = cos_tod."""
    return LOAD_MEAN - LOAD_AMPLITUDE * cos_tod


def datacenter_vector_field(
    x: Array,
    u: Array,
    capacitance: Array | float = CAPACITANCE,
    cooling_gain: Array | float = COOLING_GAIN,
    neighbour_coupling: Array | float = NEIGHBOUR_COUPLING,
    outside_coupling: Array | float = OUTSIDE_COUPLING,
    recirculation: float = RECIRCULATION,
    saturation: float = SATURATION,
    topology: Topology | None = None,
) -> Array:
    """Zone temperatures, loads and the time-of-day clock; B x (2 n + 2).

    State x = (T_1..T_n, q_1..q_n, sin tod, cos tod), action u = (u_1..u_n) in [0, 1].
    ```
    C dT_i/dt = q_i + r q_i^2/q_nom - K eff(u_i) (T_i - T_sup)
                + k_nb sum_{j ~ i} (T_j - T_i) + k_out (T_out(tod) - T_i)
    dq_i/dt   = q_i d/dt log(profile(tod))
    d(sin, cos)/dt = omega (cos, -sin)
    ```
    eff(u) = u when ``saturation == 0`` (the textbook prior), else
    (1 - exp(-s u)) / (1 - exp(-s)). j ~ i: the zones coupled to zone i in ``topology`` (None:
    a row, ``Topology.row(n)``, where the end zones have one neighbour); the sum is a sparse
    gather, O(zones x neighbours), never an n x n product.
    """
    xp = array_namespace(x)
    n = u.shape[-1]
    graph = Topology.row(n) if topology is None else topology
    temps, loads = x[..., :n], x[..., n : 2 * n]
    sin_tod, cos_tod = x[..., 2 * n : 2 * n + 1], x[..., 2 * n + 1 : 2 * n + 2]
    outside = OUTSIDE_MEAN - OUTSIDE_AMPLITUDE * cos_tod
    if isinstance(saturation, int | float) and saturation == 0:
        effectiveness = u
    else:
        effectiveness = (1.0 - xp.exp(-saturation * u)) / (1.0 - math.exp(-saturation))
    heat = loads + recirculation * loads**2 / NOMINAL_LOAD
    d_temps = (
        heat
        - cooling_gain * effectiveness * (temps - SUPPLY_TEMP)
        + neighbour_coupling * graph.diffusion(temps)
        + outside_coupling * (outside - temps)
    ) / capacitance
    d_loads = loads * (OMEGA * LOAD_AMPLITUDE * sin_tod / load_profile(cos_tod))
    return xp.concatenate([d_temps, d_loads, OMEGA * cos_tod, -OMEGA * sin_tod], -1)


class DataCenterPrior(PhysicsPrior):
    """Lumped RC prior: linear cooling effectiveness, no recirculation.

    Learnable (positive): ``capacitance``, ``cooling_gain``, ``neighbour_coupling``,
    ``outside_coupling``: four numbers whatever the zone count (one conductance for every
    coupled pair of ``topology``, default a row). The load and clock equations are known
    exactly. Missing physics: recirculation heat that grows with load, and cooling
    effectiveness that saturates.
    """

    def __init__(
        self,
        num_zones: int,
        capacitance: float = CAPACITANCE,
        cooling_gain: float = COOLING_GAIN,
        neighbour_coupling: float = NEIGHBOUR_COUPLING,
        outside_coupling: float = OUTSIDE_COUPLING,
        *,
        topology: Topology | None = None,
    ) -> None:
        num_zones = _check_num_zones(num_zones)
        if topology is None:
            topology = Topology.row(num_zones)
        if not isinstance(topology, Topology):
            raise TypeError(
                "topology must be a hybridgym.models.topology.Topology (e.g. Topology.grid(4, 8))"
                f" or None for a row, got {type(topology).__name__}"
            )
        if topology.num_units != num_zones:
            raise ValueError(
                f"the topology has {topology.num_units} units but num_zones is {num_zones}; "
                "build it for the same number of zones"
            )
        super().__init__(state_dim=2 * num_zones + 2, action_dim=num_zones)
        self.topology = topology
        self.add_constant("capacitance", capacitance, positive=True)
        self.add_constant("cooling_gain", cooling_gain, positive=True)
        self.add_constant("neighbour_coupling", neighbour_coupling, positive=True)
        self.add_constant("outside_coupling", outside_coupling, positive=True)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        c = self.constants()
        return datacenter_vector_field(
            x,
            u,
            capacitance=c["capacitance"],
            cooling_gain=c["cooling_gain"],
            neighbour_coupling=c["neighbour_coupling"],
            outside_coupling=c["outside_coupling"],
            recirculation=0.0,
            saturation=0.0,
            topology=self.topology,
        )


def _check_num_zones(num_zones: Any) -> int:
    if isinstance(num_zones, bool) or not isinstance(num_zones, int | np.integer):
        raise TypeError(
            f"num_zones must be an int >= 1 (e.g. 4), got {type(num_zones).__name__} {num_zones!r}"
        )
    if num_zones < 1:
        raise ValueError(f"num_zones must be an int >= 1 (e.g. 4), got {num_zones}")
    return int(num_zones)


def _make_topology(num_zones: int, topology: Any, rows: Any) -> Topology:
    """The zone graph named by ``topology`` (and ``rows`` for a grid), checked."""
    if not isinstance(topology, str):
        raise TypeError(
            f"topology must be one of {TOPOLOGIES} (a name), got {type(topology).__name__} "
            f"{topology!r}"
        )
    if topology not in TOPOLOGIES:
        close = difflib.get_close_matches(topology, TOPOLOGIES, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown topology {topology!r}; use one of {TOPOLOGIES}.{hint}")
    divisors = [d for d in range(1, num_zones + 1) if num_zones % d == 0]
    if topology == "row":
        if rows is not None:
            raise ValueError(
                f"rows={rows!r} is for topology='grid'; a 'row' is one row of zones (pass "
                "topology='grid' with rows, or leave rows out)"
            )
        return Topology.row(num_zones)
    if rows is None:
        raise ValueError(
            f"topology='grid' needs rows=, the number of rack rows: a divisor of "
            f"num_zones={num_zones} ({', '.join(map(str, divisors))})"
        )
    if isinstance(rows, bool) or not isinstance(rows, int | np.integer):
        raise TypeError(f"rows must be an int >= 1, got {type(rows).__name__} {rows!r}")
    if rows < 1 or num_zones % rows:
        raise ValueError(
            f"rows={rows} must divide num_zones={num_zones} (each row holds as many zones); "
            f"use one of {', '.join(map(str, divisors))}"
        )
    return Topology.grid(int(rows), num_zones // int(rows))


def _check_load_noise(load_noise: Any) -> float:
    if isinstance(load_noise, bool) or not isinstance(load_noise, int | float):
        raise TypeError(
            f"load_noise must be a float in [0, 0.5] (std of the log load multiplier), "
            f"got {type(load_noise).__name__} {load_noise!r}"
        )
    if not 0 <= load_noise <= 0.5:
        raise ValueError(f"load_noise must be in [0, 0.5], got {load_noise!r}")
    return float(load_noise)


class DataCenterTask(Task):
    """Keep rack inlets at or below 27 C with as little cooling energy as possible.

    See :class:`DataCenterEnv` for the full description. Time unit: hours; dt = 5 min.
    Prior default perturbation: 0.3 (all four constants start 30% low).
    """

    name: ClassVar[str] = "datacenter"
    real_env_id: ClassVar[str] = "hybridgym/DataCenter-v0"
    dt: ClassVar[float] = DT_HOURS
    max_episode_steps: ClassVar[int] = 288
    time_unit: ClassVar[str] = "h"
    substeps: ClassVar[int] = 10
    summary: ClassVar[str] = (
        "C T_i' = q_i + recirc(q_i) - K eff(u_i)(T_i - T_sup) + neighbours + outside air"
    )

    def __init__(
        self,
        num_zones: int = 4,
        load_noise: float = 0.05,
        topology: str = "row",
        rows: int | None = None,
    ) -> None:
        self.num_zones = _check_num_zones(num_zones)
        self.load_noise = _check_load_noise(load_noise)
        #: which zones exchange heat (a :class:`~hybridgym.models.topology.Topology`)
        self.topology = _make_topology(self.num_zones, topology, rows)

    @property
    def real_env_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"num_zones": self.num_zones, "load_noise": self.load_noise}
        if self.topology.kind == "grid":  # a row (the default) is left out: older files agree
            kwargs.update(topology="grid", rows=self.topology.shape[0])
        return kwargs

    @property
    def state_names(self) -> tuple[str, ...]:
        n = self.num_zones
        temps = tuple(f"inlet_temp_{i}" for i in range(n))
        loads = tuple(f"it_load_{i}" for i in range(n))
        return (*temps, *loads, "sin_time_of_day", "cos_time_of_day")

    @property
    def action_names(self) -> tuple[str, ...]:
        return tuple(f"cooling_{i}" for i in range(self.num_zones))

    @property
    def observation_space(self) -> spaces.Box:
        n = self.num_zones
        low = np.concatenate([np.full(n, -40.0), np.zeros(n), [-1.0, -1.0]])
        high = np.concatenate([np.full(n, 200.0), np.full(n, 3.0 * NOMINAL_LOAD), [1.0, 1.0]])
        return spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)

    @property
    def action_space(self) -> spaces.Box:
        return spaces.Box(0.0, 1.0, shape=(self.num_zones,), dtype=np.float32)

    def obs_to_state(self, obs: Array) -> Array:
        return obs * 1  # a copy, of the same kind

    def state_to_obs(self, state: Array) -> Array:
        return state * 1

    def reward(self, state: Array, action: Array, next_state: Array) -> Array:
        """-(cooling energy in kWh + (T - 27)_+), averaged over zones, on the next state."""
        xp = array_namespace(next_state)
        u = self.clip_action(action)
        overheat = xp.clip(next_state[..., : self.num_zones] - MAX_INLET, 0.0, None)
        energy = COOLING_POWER * self.dt * u
        return -(energy + OVERHEAT_WEIGHT * overheat).mean(-1)

    def sample_initial_states(self, n, generator=None, *, dtype=torch.float32, device=None):
        z = self.num_zones
        temps = uniform(
            n, np.full(z, 20.0), np.full(z, 25.0), generator, dtype=dtype, device=device
        )
        xp = array_namespace(temps)
        log_mult = self.load_noise * normal(n, z, generator, dtype=dtype, device=device)
        log_mult = xp.clip(log_mult, -LOAD_NOISE_CLIP, LOAD_NOISE_CLIP)
        loads = NOMINAL_LOAD * load_profile(1.0) * xp.exp(log_mult)
        midnight_sin, midnight_cos = xp.zeros_like(temps[:, :1]), xp.ones_like(temps[:, :1])
        return xp.concatenate([temps, loads, midnight_sin, midnight_cos], -1)

    def true_vector_field(self, state: Array, action: Array) -> Array:
        return datacenter_vector_field(state, action, topology=self.topology)

    def missing_physics(self, state: Array, action: Array) -> Array:
        prior_at_truth = datacenter_vector_field(
            state, action, recirculation=0.0, saturation=0.0, topology=self.topology
        )
        return self.true_vector_field(state, action) - prior_at_truth

    def make_residual(
        self,
        hidden: Sequence[int] = (32, 32),
        activation: str = "tanh",
        structured: bool = True,
        prior: torch.nn.Module | None = None,
    ) -> torch.nn.Module:
        """One network shared by the zones: zone i's temperature, load and cooling effort and
        the clock in, a correction to dT_i/dt out (the missing physics is local to a zone;
        the coupling between zones is in the prior). Parameters do not grow with zones.
        ``structured=False``: the whole-state MLP of :meth:`Task.make_residual`."""
        if not structured:
            return super().make_residual(hidden, activation, structured=False)
        n = self.num_zones
        return UnitResidual(
            self.state_dim,
            self.action_dim,
            unit_states=[[i, n + i] for i in range(n)],
            unit_outputs=[[i] for i in range(n)],
            unit_actions=[[i] for i in range(n)],
            shared_states=[2 * n, 2 * n + 1],
            hidden=hidden,
            activation=activation,
        )

    def _make_prior(self, scale: float) -> DataCenterPrior:
        return DataCenterPrior(
            self.num_zones,
            capacitance=CAPACITANCE * scale,
            cooling_gain=COOLING_GAIN * scale,
            neighbour_coupling=NEIGHBOUR_COUPLING * scale,
            outside_coupling=OUTSIDE_COUPLING * scale,
            topology=self.topology,
        )


class DataCenterEnv(SystemEnv):
    """``num_zones`` rack zones in a row (or a grid of rows): keep inlet temperatures at or
    below 27 C (the ASHRAE recommended upper limit) with as little cooling energy as possible,
    over one day.

    ## Dynamics (units: C, kW, hours)
    ```
    C dT_i/dt = q_i + r q_i^2/q_nom - K eff(u_i) (T_i - T_sup)
                + k_nb sum_{j ~ i} (T_j - T_i) + k_out (T_out - T_i)
    ```
    j ~ i: the zones next to zone i. ``topology="row"`` (default): zones 0 .. n-1 in a line,
    zone i next to i - 1 and i + 1 (the ends have one neighbour). ``topology="grid"`` with
    ``rows=R``: R rows of n / R zones numbered row by row (zone r n/R + c), each next to its
    left and right neighbour and to the zones at the same position in the rows in front and
    behind.
    C = 0.5 kWh/K, K = 4 kW/K, T_sup = 16 C, k_nb = 0.5 kW/K, k_out = 0.3 kW/K,
    T_out = 22 - 6 cos(2 pi t/24h) C. IT load q_i = 20 kW x (0.7 - 0.25 cos(2 pi t/24h)) x m_i,
    where the multiplier m_i follows an AR(1) in log space (correlation 0.9 per step, stationary
    std ``load_noise``, kept within [1/2, 2]). Integrated with RK4, 10 substeps per 5-minute step.

    ## Action space
    | index | action | range |
    |-------|--------|-------|
    | i | cooling effort of zone i (airflow / valve opening) | [0, 1] |

    ## Observation space (n = num_zones)
    | index | observation | range |
    |-------|-------------|-------|
    | 0 .. n-1 | inlet temperature of each zone, C | [-40, 200] |
    | n .. 2n-1 | IT load of each zone, kW | [0, 60] |
    | 2n, 2n+1 | sin, cos of 2 pi (time of day)/24h | [-1, 1] |

    ## Reward
    ``-(1/n) sum_i (12 kW x u_i x dt + (T_i - 27)_+)``: cooling energy in kWh (one zone at full
    effort for one step costs 1 kWh) plus a penalty of 1 per K above 27 C, on the next state.
    A proportional thermostat (``ThermostatController``: u = 0.1 (T - 24.5)) scores about -43
    a day, random actions about -150, no cooling about -12,800.

    ## Starting state
    Midnight; T_i ~ U(20, 25) C; load multipliers from their stationary distribution.

    ## Episode end
    One day: truncated after 288 steps of 5 minutes; never terminates.

    ## The missing physics
    A lumped RC prior (learnable C, K, k_nb, k_out) lacks (a) hot-air recirculation, heat
    0.15 q_i^2 / q_nom that grows with load (about 2.7 kW per zone at the daily peak), and
    (b) saturation of cooling effectiveness, eff(u) = (1 - exp(-3u)) / (1 - exp(-3)) instead of
    u (at u = 0.3 the truth removes 63 % of full-effort heat, the prior expects 30 %).

    ## Arguments
    ``num_zones`` (int >= 1, default 4); ``load_noise`` (float in [0, 0.5], default 0.05);
    ``topology`` (``"row"``, default, or ``"grid"``); ``rows`` (grid only: the number of rows,
    a divisor of ``num_zones``).

    ## Version history
    * v0: initial version. ``topology`` and ``rows`` were added later; the default row is
      unchanged (bit for bit).
    """

    def __init__(
        self,
        num_zones: int = 4,
        load_noise: float = 0.05,
        topology: str = "row",
        rows: int | None = None,
    ) -> None:
        super().__init__(
            DataCenterTask(num_zones=num_zones, load_noise=load_noise, topology=topology, rows=rows)
        )

    def _transition(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        x_next = self.task.true_step(x, u)
        sigma = self.task.load_noise
        if sigma > 0:
            n = self.task.num_zones
            nominal = NOMINAL_LOAD * load_profile(x_next[:, 2 * n + 1 : 2 * n + 2])
            log_mult = np.log(x_next[:, n : 2 * n] / nominal)
            shock = sigma * math.sqrt(1.0 - LOAD_NOISE_CORRELATION**2)
            log_mult = LOAD_NOISE_CORRELATION * log_mult + shock * self.np_random.standard_normal(
                log_mult.shape
            )
            log_mult = np.clip(log_mult, -LOAD_NOISE_CLIP, LOAD_NOISE_CLIP)
            x_next[:, n : 2 * n] = nominal * np.exp(log_mult)
        return x_next


register_task(DataCenterTask.name, DataCenterTask)
