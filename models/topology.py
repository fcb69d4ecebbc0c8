"""Which units of a system exchange something with which: a sparse neighbour graph.

Systems of alike units (rack zones in a room, cells in a pack) couple each unit to a few
neighbours, so a coupling term costs O(edges), not O(n^2), and needs no n x n matrix. A
:class:`Topology` stores such a graph as a padded neighbour table (the ELLPACK sparse format,
a banded matrix generalised to any graph) and applies the graph Laplacian with gathers, to
numpy arrays and torch tensors alike (see :mod:`hybridgym.models.arrays`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from hybridgym.models.arrays import Array, lasting_tensor

KINDS = ("row", "grid", "edges")


def _check_count(label: str, value: Any, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(
            f"{label} must be an int >= 1 ({fix}), got {type(value).__name__} {value!r}"
        )
    if value < 1:
        raise ValueError(f"{label} must be an int >= 1 ({fix}), got {value}")
    return int(value)


def _normalise_edges(num_units: int, edges: Any) -> tuple[tuple[int, int], ...]:
    """Edges as sorted (i, j) pairs with i < j, checked; in the order given."""
    try:
        pairs = [tuple(edge) for edge in edges]
    except TypeError:
        raise TypeError(
            f"edges must be a sequence of (i, j) pairs of unit indices, got {edges!r}"
        ) from None
    out: list[tuple[int, int]] = []
    seen: dict[tuple[int, int], int] = {}
    for k, pair in enumerate(pairs):
        if len(pair) != 2 or any(
            isinstance(i, bool) or not isinstance(i, int | np.integer) for i in pair
        ):
            raise TypeError(f"edge {k} must be a pair (i, j) of int unit indices, got {pair!r}")
        i, j = int(pair[0]), int(pair[1])
        for end in (i, j):
            if not 0 <= end < num_units:
                raise ValueError(
                    f"edge {k} {(i, j)} names unit {end}; units are numbered 0 .. "
                    f"{num_units - 1} (num_units={num_units})"
                )
        if i == j:
            raise ValueError(
                f"edge {k} {(i, j)} joins unit {i} to itself; leave it out (a unit exchanges "
                "nothing with itself)"
            )
        key = (min(i, j), max(i, j))
        if key in seen:
            raise ValueError(
                f"edges {seen[key]} and {k} both join units {key[0]} and {key[1]} (edges are "
                "undirected); list each pair once"
            )
        seen[key] = k
        out.append(key)
    return tuple(out)


class Topology:
    """An undirected graph on ``num_units`` alike units, with its Laplacian as gathers.

    Build it with :meth:`row` (a line of units, the ends with one neighbour), :meth:`grid`
    (rows x columns, numbered row by row) or :meth:`from_edges`. Stored as a neighbour table
    ``neighbours`` (n x k, k the largest degree): row i lists unit i's neighbours in ascending
    order, padded with i itself. :meth:`diffusion` applies

        (L v)_i = sum over neighbours j of i of (v_j - v_i)

    as k gathers, ``sum_s v[neighbours[:, s]] - k v``: a padding entry adds v_i - v_i = 0 (the
    ghost cell of an insulated boundary). Cost and memory are O(n k), O(edges) for graphs of
    bounded degree (rows, grids, rooms), and no n x n matrix is ever built; a graph with one
    hub of degree d pads every unit to d entries.

    Attributes:
        num_units: n.
        edges: the undirected edges as (i, j) pairs with i < j, E of them.
        kind: ``"row"``, ``"grid"`` or ``"edges"`` (how it was built).
        shape: (rows, columns) of a grid, (1, n) of a row, None for ``from_edges``.
        neighbours: the n x k neighbour table (int64, read-only).
        degrees: each unit's number of neighbours, n (int64, read-only).
    """

    def __init__(self, num_units: int, edges: Iterable[tuple[int, int]]) -> None:
        self._build(num_units, edges, "edges", None, 0)

    def _build(
        self,
        num_units: int,
        edges: Iterable[tuple[int, int]],
        kind: str,
        shape: tuple[int, int] | None,
        min_width: int,
    ) -> None:
        assert kind in KINDS
        self.num_units = _check_count("num_units", num_units, "the number of units")
        self.edges = _normalise_edges(self.num_units, edges)
        self.kind, self.shape = kind, shape
        n = self.num_units
        lists: list[list[int]] = [[] for _ in range(n)]
        for i, j in self.edges:
            lists[i].append(j)
            lists[j].append(i)
        self.degrees = np.array([len(nb) for nb in lists], dtype=np.int64)
        # at least min_width slots: a row keeps two even where no zone has two neighbours
        # (n <= 2), the arithmetic of the two-sided stencil T_left + T_right - 2 T
        width = max(int(self.degrees.max()), min_width)
        table = np.array([sorted(nb) + [i] * (width - len(nb)) for i, nb in enumerate(lists)])
        self.neighbours = table.reshape(n, width).astype(np.int64)
        self.neighbours.setflags(write=False)
        self.degrees.setflags(write=False)
        # one index array per slot of the table (numpy), and their tensors per device
        self._columns = [self.neighbours[:, s].copy() for s in range(width)]
        self._tensors: dict[torch.device, list[torch.Tensor]] = {}

    # --- constructors ------------------------------------------------------------------------
    @classmethod
    def from_edges(cls, num_units: int, edges: Iterable[tuple[int, int]]) -> Topology:
        """Any undirected graph: ``edges`` lists each coupled pair (i, j) once, i != j (the
        same as ``Topology(num_units, edges)``)."""
        return cls(num_units, edges)

    @classmethod
    def _named(
        cls, num_units: int, edges: list[tuple[int, int]], kind: str, shape: tuple[int, int]
    ) -> Topology:
        topology = cls.__new__(cls)
        topology._build(num_units, edges, kind, shape, 2 if kind == "row" else 0)
        return topology

    @staticmethod
    def row(num_units: int) -> Topology:
        """Units 0 .. n-1 in a line; unit i is coupled to i - 1 and i + 1 (cached per n)."""
        return _row(_check_count("num_units", num_units, "the number of units in the row"))

    @classmethod
    def grid(cls, rows: int, columns: int) -> Topology:
        """``rows`` x ``columns`` units numbered row by row (unit r * columns + c); each is
        coupled to its left and right neighbour in its row and to the unit at the same
        position in the rows in front and behind. ``grid(1, n)`` equals ``row(n)``."""
        rows = _check_count("rows", rows, "the number of rows of units")
        columns = _check_count("columns", columns, "the number of units per row")
        edges = []
        for r in range(rows):
            for c in range(columns):
                i = r * columns + c
                if c + 1 < columns:
                    edges.append((i, i + 1))
                if r + 1 < rows:
                    edges.append((i, i + columns))
        return cls._named(rows * columns, edges, "grid", (rows, columns))

    # --- use ---------------------------------------------------------------------------------
    @property
    def num_edges(self) -> int:
        """E, the number of undirected edges."""
        return len(self.edges)

    def diffusion(self, values: Array) -> Array:
        """``(L v)_i = sum_j (v_j - v_i)`` over unit i's neighbours; ``values`` is ... x n
        (numpy or torch, any leading dimensions), the result has its shape and kind."""
        if values.shape[-1] != self.num_units:
            raise ValueError(
                f"values must have {self.num_units} entries (one per unit) in the last "
                f"dimension, got shape {tuple(values.shape)}"
            )
        if not self._columns:  # no edges at all
            return values - values
        if isinstance(values, torch.Tensor):
            columns = self._tensors.get(values.device)
            if columns is None:
                columns = [lasting_tensor(c, torch.long, values.device) for c in self._columns]
                self._tensors[values.device] = columns
            gathered = [values.index_select(-1, c) for c in columns]
        else:
            gathered = [np.take(values, c, axis=-1) for c in self._columns]
        total = gathered[0]  # a new array: in place from here on (autograd allows it)
        for g in gathered[1:]:
            total += g
        total -= float(len(gathered)) * values
        return total

    def laplacian(self) -> np.ndarray:
        """The dense n x n graph Laplacian (``v @ laplacian() == diffusion(v)``), float64: for
        tests and dense baselines only; :meth:`diffusion` never builds it."""
        n = self.num_units
        dense = np.zeros((n, n))
        for i, j in self.edges:
            dense[i, j] = dense[j, i] = 1.0
        dense[np.arange(n), np.arange(n)] = -self.degrees
        return dense

    # --- identity ----------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Topology)
            and self.num_units == other.num_units
            and set(self.edges) == set(other.edges)
        )

    def __hash__(self) -> int:
        return hash((self.num_units, frozenset(self.edges)))

    def __repr__(self) -> str:
        if self.kind == "row":
            return f"Topology.row({self.num_units})"
        if self.kind == "grid":
            return f"Topology.grid({self.shape[0]}, {self.shape[1]})"
        return f"Topology.from_edges({self.num_units}, <{self.num_edges} edges>)"


@functools.lru_cache(maxsize=64)
def _row(num_units: int) -> Topology:
    edges = [(i, i + 1) for i in range(num_units - 1)]
    return Topology._named(num_units, edges, "row", (1, num_units))
