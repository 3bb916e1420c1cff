"""Input domains: parsing every spelling, containment, extent, JSON, and the radii a domain admits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from polycert.formulations.domains import Domain, center_digest, check_radii, network_domain, parse_domain, with_domain
from polycert.formulations.errors import InvalidInputError
from polycert.formulations.network import Network


@pytest.mark.parametrize("spelling", ["-1,1", " -1 , 1 ", "[-1, 1]", '{"lower": -1, "upper": 1}', (-1, 1),
                                      [-1.0, 1.0], {"lower": -1.0, "upper": 1.0}, Domain(-1, 1)])
def test_every_spelling_of_minus_one_to_one_reads_as_the_same_box(spelling):
    assert parse_domain(spelling) == Domain(-1.0, 1.0)
    assert parse_domain(spelling).describe() == "[-1, 1]"


@pytest.mark.parametrize("spelling", ["-inf,inf", "unbounded", "[null, null]", {"lower": None, "upper": None},
                                      (-math.inf, math.inf), ["-inf", "inf"]])
def test_open_sides_read_as_the_unbounded_domain(spelling):
    domain = parse_domain(spelling)
    assert domain == Domain.unbounded() and not domain.is_bounded
    assert domain.to_json() == {"lower": None, "upper": None} and domain.describe() == "unbounded"


@pytest.mark.parametrize("spelling, message", [
    ("1,-1", "empty"), ("0", "LO,HI"), ("a,b", "must be numbers"), ("nan,1", "NaN"), ("[0, 1", "JSON"),
    ([[0, 1], [1]], "coordinates"), ({"low": 0}, "keys lower and upper"), ("inf,inf", "cannot be \\+inf"),
    ([1, [2, 0.5]], "empty: lower bound 1.0 > upper bound 0.5 \\(coordinate 1\\)"), (3, "pair"),
])
def test_malformed_domains_are_refused_with_a_message(spelling, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_domain(spelling)


def test_a_per_coordinate_domain_keeps_its_coordinates_and_an_open_side():
    domain = parse_domain({"lower": [0, -1, None], "upper": 255})
    lo, hi = domain.bounds(3)
    assert lo.tolist() == [0.0, -1.0, -math.inf] and hi.tolist() == [255.0] * 3
    assert domain.to_json() == {"lower": [0.0, -1.0, None], "upper": 255.0}
    assert parse_domain(domain.to_json()) == domain
    with pytest.raises(InvalidInputError, match="3 coordinates; the inputs have 4"):
        domain.bounds(4)


def test_a_uniform_per_coordinate_domain_is_written_as_scalars():
    assert Domain([0.0, 0.0], [1.0, 1.0]).to_json() == {"lower": 0.0, "upper": 1.0}


def test_containment_is_coordinate_by_coordinate():
    outer = Domain([-1, 0], [1, 2])
    assert outer.contains(Domain(0, 1), 2)
    assert outer.contains(Domain([-1, 0], [1, 2]), 2)
    assert not outer.contains(Domain(-0.5, 1), 2)  # coordinate 1 would reach below 0
    assert not Domain(0, 1).contains(Domain.unbounded(), 2)
    assert Domain.unbounded().contains(Domain([-5, -math.inf], [5, 3]), 2)


def test_the_extent_is_the_boxes_diameter_in_the_norm():
    domain = Domain([0, 0], [3, 4])
    assert domain.extent("linf", 2) == 4.0
    assert domain.extent("l1", 2) == 7.0
    assert domain.extent("l2", 2) == pytest.approx(5.0)
    assert Domain(0, 255).extent("linf", 784) == 255.0
    assert Domain(0, math.inf).extent("linf", 3) == math.inf


def test_radii_must_be_finite_non_negative_and_within_the_extent():
    check_radii([5.0, 12.0], Domain(0, 255), "linf", 784)  # raw pixels take eps 5 or 12
    check_radii([1e6], Domain.unbounded(), "linf", 2)  # an unbounded domain takes any finite eps
    for eps, message in ((math.nan, "finite"), (math.inf, "finite"), (-0.1, ">= 0"), (300.0, "exceeds the linf extent 255")):
        with pytest.raises(InvalidInputError, match=message):
            check_radii([1.0, eps], Domain(0, 255), "linf", 4)
    with pytest.raises(InvalidInputError, match="finite"):
        check_radii([math.inf], Domain.unbounded(), "linf", 2)


def test_a_network_carries_its_domain_in_its_metadata():
    net = Network.from_arrays([np.ones((2, 3)), np.ones((1, 2))], [np.zeros(2), np.zeros(1)], "relu")
    assert network_domain(net) == Domain.unbounded()  # nothing said: the plain ball
    assert network_domain(net, default=Domain.unit()) == Domain.unit()
    tagged = with_domain(net, "0,255")
    assert network_domain(tagged) == Domain(0, 255) and tagged.digest() == net.digest()
    with pytest.raises(InvalidInputError, match="2 coordinates; the inputs have 3"):
        with_domain(net, Domain([0, 0], [1, 1]))


def test_the_centre_digest_names_the_exact_float64_point():
    assert center_digest([0.05]) == center_digest(np.array([0.05]))
    assert center_digest([0.05]) != center_digest([np.nextafter(0.05, 1.0)])
