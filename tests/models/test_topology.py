"""Topology: a sparse neighbour graph whose Laplacian is applied as gathers, checked against the
dense n x n Laplacian, in numpy and torch, with its argument checks."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgym.models.topology import Topology

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def graphs(draw: st.DrawFn) -> Topology:
    """A row, a grid or a random graph (any degrees, isolated units included)."""
    kind = draw(st.sampled_from(["row", "grid", "edges"]))
    if kind == "row":
        return Topology.row(draw(st.integers(1, 40)))
    if kind == "grid":
        return Topology.grid(draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    n = draw(st.integers(1, 25))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    flip = draw(st.booleans())
    return Topology.from_edges(n, [(j, i) if flip else (i, j) for i, j in chosen])


@SETTINGS
@given(graphs(), st.integers(0, 2**32 - 1))
def test_diffusion_equals_the_dense_laplacian_in_numpy_and_torch(topology, seed):
    n = topology.num_units
    values = np.random.default_rng(seed).normal(20.0, 5.0, size=(3, n))
    dense = values @ topology.laplacian()
    np.testing.assert_allclose(topology.diffusion(values), dense, rtol=1e-12, atol=1e-11)
    as_torch = topology.diffusion(torch.as_tensor(values))
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float64
    np.testing.assert_allclose(as_torch.numpy(), dense, rtol=1e-12, atol=1e-11)
    # a symmetric Laplacian conserves the total: what one unit loses, its neighbours gain
    np.testing.assert_allclose(dense.sum(-1), 0.0, atol=1e-9)
    # the table holds O(edges) indices: n rows of the largest degree (2 for a row)
    width = max(int(topology.degrees.max()), 2 if topology.kind == "row" else 0)
    assert topology.neighbours.shape == (n, width)
    assert topology.degrees.sum() == 2 * topology.num_edges


def test_diffusion_keeps_leading_dimensions_and_differentiates_like_the_dense_form():
    topology = Topology.grid(3, 4)
    values = torch.randn(2, 5, 12, dtype=torch.float64, requires_grad=True)
    out = topology.diffusion(values)
    assert out.shape == (2, 5, 12)
    weights = torch.randn(2, 5, 12, dtype=torch.float64)
    (grad,) = torch.autograd.grad((out * weights).sum(), values)
    dense = torch.as_tensor(topology.laplacian())
    torch.testing.assert_close(grad, weights @ dense.T)
    assert torch.autograd.gradcheck(topology.diffusion, (values[0, :2].detach().requires_grad_(),))


def test_named_layouts():
    row, grid = Topology.row(5), Topology.grid(2, 3)
    assert row.edges == ((0, 1), (1, 2), (2, 3), (3, 4)) and row.kind == "row"
    assert row.shape == (1, 5) and row.num_edges == 4 and Topology.row(5) is row  # cached
    # zone r * columns + c: left/right within a row, front/behind across rows
    assert set(grid.edges) == {(0, 1), (1, 2), (3, 4), (4, 5), (0, 3), (1, 4), (2, 5)}
    assert grid.num_edges == 2 * (3 - 1) + 3 * (2 - 1) and grid.shape == (2, 3)
    assert grid.neighbours.tolist() == [
        [1, 3, 0],
        [0, 2, 4],
        [1, 5, 2],
        [0, 4, 3],
        [1, 3, 5],
        [2, 4, 5],
    ]
    assert Topology.grid(1, 5) == row and hash(Topology.grid(1, 5)) == hash(row)
    assert Topology.from_edges(3, [(1, 0), (2, 1)]) == Topology.row(3) != Topology.row(4)
    assert repr(grid) == "Topology.grid(2, 3)" and repr(row) == "Topology.row(5)"
    assert repr(Topology(3, [(0, 2)])) == "Topology.from_edges(3, <1 edges>)"
    # a single zone, or units without edges: nothing is exchanged
    for lonely in (Topology.row(1), Topology(3, [])):
        values = np.array([[1.0, -2.0, 3.0][: lonely.num_units]])
        assert np.array_equal(lonely.diffusion(values), np.zeros_like(values))
    assert not Topology.row(3).neighbours.flags.writeable


@pytest.mark.parametrize(
    ("build", "error", "pattern"),
    [
        (lambda: Topology.row(0), ValueError, r"num_units must be an int >= 1 \(the number of"),
        (lambda: Topology.row(True), TypeError, "num_units must be an int"),
        (lambda: Topology.row(2.0), TypeError, "got float 2.0"),
        (lambda: Topology.grid(0, 3), ValueError, "rows must be an int >= 1"),
        (lambda: Topology.grid(2, "3"), TypeError, "columns must be an int"),
        (
            lambda: Topology(3, [(0, 3)]),
            ValueError,
            r"edge 0 \(0, 3\) names unit 3; units .*0 .. 2",
        ),
        (lambda: Topology(3, [(-1, 0)]), ValueError, "names unit -1"),
        (lambda: Topology(3, [(1, 1)]), ValueError, "joins unit 1 to itself; leave it out"),
        (
            lambda: Topology(3, [(0, 1), (1, 0)]),
            ValueError,
            "edges 0 and 1 both join units 0 and 1",
        ),
        (lambda: Topology(3, [(0, 1, 2)]), TypeError, r"edge 0 must be a pair \(i, j\)"),
        (lambda: Topology(3, [(0, 1.0)]), TypeError, "int unit indices"),
        (lambda: Topology(3, 5), TypeError, r"edges must be a sequence of \(i, j\) pairs"),
    ],
)
def test_bad_arguments_say_what_was_wrong(build, error, pattern):
    with pytest.raises(error, match=pattern):
        build()


def test_values_of_the_wrong_width_are_refused():
    with pytest.raises(ValueError, match=r"values must have 4 entries \(one per unit\).*\(2, 3\)"):
        Topology.row(4).diffusion(np.zeros((2, 3)))


def test_numpy_edge_arrays_are_accepted():
    edges = np.array([[0, 1], [1, 2]], dtype=np.int64)
    assert Topology(3, edges) == Topology.row(3)
    assert Topology(np.int64(3), edges).num_units == 3
