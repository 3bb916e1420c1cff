"""PolyCert's verification engine: the mathematics, no I/O to services and no service code.

Public entry points are re-exported here; see docs/architecture.md for the module map.
"""

from .activations import Activation, get_activation
from .certificate import Certificate, TargetBound, UnknownReason, Verdict
from .errors import (
    InvalidInputError,
    NetworkShapeError,
    PolyCertError,
    SolverError,
    SolverNotAvailableError,
    UnsoundAnswerError,
    UnsupportedOperatorError,
)
from .model import ConstraintTag, Model, Sense
from .network import Layer, Network

__all__ = [
    "Activation",
    "Certificate",
    "ConstraintTag",
    "InvalidInputError",
    "Layer",
    "Model",
    "Network",
    "NetworkShapeError",
    "PolyCertError",
    "Sense",
    "SolverError",
    "SolverNotAvailableError",
    "TargetBound",
    "UnknownReason",
    "UnsoundAnswerError",
    "UnsupportedOperatorError",
    "Verdict",
    "get_activation",
]
