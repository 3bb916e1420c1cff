"""The solver-neutral model: rows, tags, bounds and checks, independent of any solver."""

from __future__ import annotations

import numpy as np
import pytest

from polycert.formulations import ConstraintTag, InvalidInputError, Model, Sense


def test_rows_are_stored_as_a_sparse_matrix_with_their_tags_and_ranges():
    m = Model()
    x = m.add_variables(3, 0.0, [1.0, 2.0, 3.0])
    rows = m.add_constraints(np.array([[1.0, 0.0, 2.0], [0.0, -1.0, 0.0]]), x, [-np.inf, 0.0], [4.0, 0.0],
                             tags=[ConstraintTag("affine", 0, 0), ConstraintTag("affine", 0, 1)])
    r = m.add_constraint({int(x[1]): 1.0, int(x[2]): 1.0}, 1.0, np.inf, tag=ConstraintTag("input"))
    np.testing.assert_array_equal(rows, [0, 1])
    assert r == 2
    np.testing.assert_array_equal(m.matrix().toarray(), [[1, 0, 2], [0, -1, 0], [0, 1, 1]])
    assert m.matrix().nnz == 5  # zeros dropped
    assert m.constraint_tags[1] == ConstraintTag("affine", 0, 1)
    assert m.summary() == {"variables": 3, "integers": 0, "constraints": 3, "nonzeros": 5, "sos2": 0}


def test_violation_and_tight_rows_are_measured_at_a_point():
    m = Model()
    x = m.add_variables(2, 0.0, 1.0)
    m.add_constraint({int(x[0]): 1.0, int(x[1]): 1.0}, -np.inf, 1.0)
    m.add_binaries(1)
    assert m.max_violation([0.5, 0.5, 1.0]) == 0.0
    assert m.max_violation([0.9, 0.9, 0.0]) == pytest.approx(0.8)
    assert m.max_violation([0.0, 0.0, 0.5]) == pytest.approx(0.5)  # integrality
    np.testing.assert_array_equal(m.tight_rows([0.5, 0.5, 0.0]), [0])
    assert m.tight_rows([0.1, 0.1, 0.0]).size == 0


def test_objective_and_bound_changes():
    m = Model()
    x = m.add_variables(2, 0.0, 1.0)
    m.set_objective({int(x[0]): 2.0, int(x[1]): -1.0}, constant=3.0, sense=Sense.MAXIMIZE)
    assert m.evaluate([1.0, 1.0]) == 4.0
    m.set_bounds(x[0], 0.5, 0.75)
    assert m.lb[0] == 0.5 and m.ub[0] == 0.75
    with pytest.raises(InvalidInputError):
        m.set_bounds(x[1], 2.0, 1.0)


@pytest.mark.parametrize("call", [
    lambda m, x: m.add_variables(1, 2.0, 1.0),
    lambda m, x: m.add_variables(1, np.nan, 1.0),
    lambda m, x: m.add_constraints(np.ones((1, 3)), x, 0.0, 1.0),
    lambda m, x: m.add_constraint({99: 1.0}, 0.0, 1.0),
    lambda m, x: m.add_constraint({int(x[0]): np.nan}, 0.0, 1.0),
    lambda m, x: m.set_objective({int(x[0]): np.inf}),
])
def test_malformed_models_are_refused(call):
    m = Model()
    x = m.add_variables(2, 0.0, 1.0)
    with pytest.raises(InvalidInputError):
        call(m, x)
