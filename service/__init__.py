"""PolyCert: exact verification of feed-forward networks, as a library and as a service.

The public API, for scripts and notebooks::

    import polycert

    net = polycert.load_builtin("polycert-tiny")
    x, y = polycert.load_mnist7("test")
    cert = polycert.certify(net, x[0], int(y[0]), eps=0.02, method="mip")
    result = polycert.certify_batch(net, x[:50], y[:50], 0.02, method="both")

    client = polycert.Client("http://127.0.0.1:8000", token="...")   # the service, over HTTP
    job = client.submit({"network": "polycert-tiny", "dataset": {"name": "mnist7-area", "stop": 20},
                         "eps": [0.02], "methods": "both"})   # the test split by default
    client.wait(job["id"])
    certificates = client.results(job["id"])

The repository's folders install under this one name: ``service/`` is ``polycert`` itself,
``formulations/`` is ``polycert.formulations`` (the mathematics), ``workers/`` is
``polycert.workers`` and ``migrations/`` is ``polycert.migrations``. Names are resolved lazily
(PEP 562), so that importing the engine does not import the web service and the other way round.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from polycert.version import polycert_version

__version__ = polycert_version()

# public name -> (module, attribute)
_PUBLIC = {
    # one query, one batch: the engine's two entry points
    "certify": ("polycert.formulations.robustness", "certify"),
    "certify_batch": ("polycert.formulations.cascade", "certify_batch"),
    "CascadeSettings": ("polycert.formulations.cascade", "CascadeSettings"),
    "Certificate": ("polycert.formulations.certificate", "Certificate"),
    "Verdict": ("polycert.formulations.certificate", "Verdict"),
    "Network": ("polycert.formulations.network", "Network"),
    # invertibility
    "injectivity": ("polycert.formulations.invertibility", "injectivity"),
    "preimage": ("polycert.formulations.invertibility", "preimage"),
    "dependence": ("polycert.formulations.invertibility", "dependence"),
    "decision_invariance": ("polycert.formulations.invertibility", "decision_invariance"),
    # loaders
    "load_network": ("polycert.formulations.loaders", "load_network"),
    "load_onnx": ("polycert.formulations.loaders", "load_onnx"),
    "load_torch": ("polycert.formulations.loaders", "load_torch"),
    "load_npz": ("polycert.formulations.loaders", "load_npz"),
    "save_npz": ("polycert.formulations.loaders", "save_npz"),
    "load_builtin": ("polycert.zoo", "load_builtin"),
    "builtin_networks": ("polycert.zoo", "builtin_networks"),
    "load_mnist7": ("polycert.datasets", "load_mnist7"),
    "load_mnist28_test": ("polycert.datasets", "load_mnist28_test"),
    # VNN-LIB
    "read_vnnlib": ("polycert.formulations.vnnlib", "read_vnnlib"),
    "vnncomp_answer": ("polycert.formulations.vnncomp", "vnncomp_answer"),
    # the service, over HTTP (the client the CLI uses)
    "Client": ("polycert.client", "Client"),
    "ApiError": ("polycert.client", "ApiError"),
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    try:
        module, attribute = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'polycert' has no attribute {name!r}") from None
    value = getattr(import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from polycert.client import ApiError, Client
    from polycert.datasets import load_mnist7, load_mnist28_test
    from polycert.formulations.cascade import CascadeSettings, certify_batch
    from polycert.formulations.certificate import Certificate, Verdict
    from polycert.formulations.invertibility import decision_invariance, dependence, injectivity, preimage
    from polycert.formulations.loaders import load_network, load_npz, load_onnx, load_torch, save_npz
    from polycert.formulations.network import Network
    from polycert.formulations.robustness import certify
    from polycert.formulations.vnncomp import vnncomp_answer
    from polycert.formulations.vnnlib import read_vnnlib
    from polycert.zoo import builtin_networks, load_builtin
