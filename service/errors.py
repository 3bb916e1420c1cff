"""Errors of the service layer; routes and the command line turn them into 4xx / exit codes."""

from __future__ import annotations


class ServiceError(Exception):
    """Base class of the service's own errors."""


class NotFoundError(ServiceError):
    """A network, job or certificate id that does not exist."""


class QueueUnavailableError(ServiceError):
    """The broker cannot be reached; the job was stored but not enqueued."""


class ConflictError(ServiceError):
    """The request contradicts what is stored: a name that already names another network, or known weights
    registered with another input domain (HTTP 409)."""
