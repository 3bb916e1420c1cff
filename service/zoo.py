"""Named networks shipped with the project, with the data and preprocessing they expect.

=================  =======================================================================================
``polycert-tiny``  the project's own 49-3-3-10 exact-GELU network, trained by :mod:`service.training` on
                   the 7x7 *area* MNIST (``mnist7-area``); weights ``assets/polycert_tiny_gelu.npz``
                   (``W @ x + b``), test accuracy recorded in ``assets/polycert_tiny_gelu.json``.
``verianet``       the original study's 49-3-3-10 GELU network (seed README): Keras orientation
                   ``x @ W + b`` in ``assets/verianet_weights.npz``, inputs 7x7 *bilinear* MNIST
                   (``mnist7-bilinear``). The study reports 69.8 % on unrounded bilinear inputs; on the
                   shipped uint8 inputs it classifies 69.75 % correctly (69.76 % unrounded; measured).
=================  =======================================================================================

Every network's ``metadata`` carries ``preprocessing`` and ``input_domain`` so a caller can fetch the right
test data with :func:`service.datasets.load_preprocessed` and clip perturbations to the domain.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

from polycert.formulations.domains import Domain
from polycert.formulations.errors import InvalidInputError
from polycert.formulations.loaders import load_npz
from polycert.formulations.network import Network
from polycert.datasets import asset_path


@dataclass(frozen=True)
class NetworkInfo:
    """What the zoo knows about a shipped network."""

    name: str
    description: str
    asset: str
    orientation: str
    activations: tuple[str, ...]
    preprocessing: str
    accuracy: float  # on the shipped test set of ``preprocessing`` (10,000 images)
    accuracy_source: str
    input_domain: tuple[float, float] = (0.0, 1.0)


def _tiny_accuracy() -> float:
    return float(json.loads(asset_path("polycert_tiny_gelu.json").read_text())["test_accuracy"])


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, NetworkInfo]:
    infos = [
        NetworkInfo(
            name="polycert-tiny",
            description="the project's own 49-3-3-10 exact-GELU MNIST classifier (7x7 area inputs)",
            asset="polycert_tiny_gelu.npz",
            orientation="out_in",
            activations=("gelu", "gelu", "identity"),
            preprocessing="mnist7-area",
            accuracy=_tiny_accuracy(),
            accuracy_source="assets/polycert_tiny_gelu.json (measured after training)",
        ),
        NetworkInfo(
            name="verianet",
            description="the original study's 49-3-3-10 GELU MNIST classifier (7x7 bilinear inputs)",
            asset="verianet_weights.npz",
            orientation="in_out",
            activations=("gelu", "gelu", "identity"),
            preprocessing="mnist7-bilinear",
            accuracy=0.6975,
            accuracy_source="measured on the shipped uint8 bilinear test set; the study reports 69.8 % (unrounded inputs)",
        ),
    ]
    return {info.name: info for info in infos}


def builtin_networks() -> list[NetworkInfo]:
    """The shipped networks, by name."""
    return list(_registry().values())


def network_info(name: str) -> NetworkInfo:
    try:
        return _registry()[name]
    except KeyError:
        known = ", ".join(sorted(_registry()))
        raise InvalidInputError(f"unknown built-in network {name!r}; known: {known}") from None


@functools.lru_cache(maxsize=None)
def load_builtin(name: str) -> Network:
    """A shipped network (cached; networks are immutable), its metadata naming its preprocessing."""
    info = network_info(name)
    with resources.as_file(asset_path(info.asset)) as path:  # a real file even from a zipped install
        network = load_npz(path, orientation=info.orientation, activations=list(info.activations), name=info.name)
    metadata = dict(
        network.metadata,
        source=f"service/assets/{info.asset}",
        preprocessing=info.preprocessing,
        input_domain=Domain(*info.input_domain).to_json(),  # what every query on it is clipped to
        recorded_accuracy=info.accuracy,
    )
    return Network(network.layers, name=info.name, metadata=metadata)
