from types import SimpleNamespace

import numpy as np
import pytest

from tests.service.factories import small_network
from polycert.workers.networks import network_from_bytes, network_to_bytes, stored_network


def test_a_network_survives_the_round_trip_through_bytes():
    network = small_network(3)
    back = network_from_bytes(network_to_bytes(network))
    assert back.digest() == network.digest() and back.name == network.name
    x = np.random.default_rng(0).uniform(size=(5, 4))
    assert np.array_equal(back.forward(x), network.forward(x))


def test_weights_that_do_not_match_the_digest_are_refused():
    with pytest.raises(ValueError, match="digest"):
        stored_network(SimpleNamespace(digest="0" * 64, weights=network_to_bytes(small_network(4))))
