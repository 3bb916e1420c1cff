"""Tables of the certificate store (SQLAlchemy 2 typed declarative; PostgreSQL and SQLite alike).

networks -> jobs -> chunks -> queries -> certificates -> signatures / attacks.
A query is one (input, label, eps, method); a certificate answers exactly one query
(unique on ``(query_id, method)``, so a task that runs twice stores one certificate). Signatures are
rows, one tight constraint each, so that per-digit aggregation is a ``GROUP BY``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class NetworkRow(Base):
    __tablename__ = "networks"

    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # Network.digest(): identity by content
    name: Mapped[str] = mapped_column(String(200))
    architecture: Mapped[str] = mapped_column(String(500))
    source_format: Mapped[str] = mapped_column(String(20))  # builtin / npz / pt / onnx
    input_size: Mapped[int] = mapped_column(Integer)
    output_size: Mapped[int] = mapped_column(Integer)
    # npz bytes, so workers on any machine can load it; deferred: a worker that has decoded the network
    # already (keyed by digest) never fetches them again, which matters for megabyte ONNX networks
    weights: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    # the box its inputs live in (formulations.domains.Domain.to_json; null sides are infinite): every job
    # on the network asks about balls clipped to it, or to a narrower box the job names
    input_domain: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, server_default=func.now())


class NetworkAliasRow(Base):
    """Another name of a network: the same weights uploaded under a new name (migration 0004)."""

    __tablename__ = "network_aliases"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, server_default=func.now())

    __table_args__ = (Index("ix_network_aliases_network", "network_id"),)


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id"))
    kind: Mapped[str] = mapped_column(String(30), default="robustness")
    status: Mapped[str] = mapped_column(String(20), default="queued")  # queued/running/done/cancelled/failed
    created_by: Mapped[str] = mapped_column(String(100), default="")
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)  # queries with a stored certificate
    errors: Mapped[int] = mapped_column(Integer, default=0)  # of which the engine raised
    error: Mapped[str | None] = mapped_column(Text)  # why the job failed (a chunk hit an unexpected error)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, server_default=func.now())
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    network: Mapped[NetworkRow] = relationship()

    __table_args__ = (Index("ix_jobs_status", "status"),)


class ChunkRow(Base):
    __tablename__ = "chunks"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="queued")  # queued/running/done/cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str] = mapped_column(String(200), default="")
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("job_id", "position", name="uq_chunks_job_position"),)


class QueryRow(Base):
    __tablename__ = "queries"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    chunk_id: Mapped[int] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"))
    item: Mapped[int] = mapped_column(Integer)  # index of the input within the job (pairs LP with MIP)
    source_index: Mapped[int | None] = mapped_column(Integer)  # index in the dataset, when taken from one
    input: Mapped[list[float]] = mapped_column(JSON)
    label: Mapped[int] = mapped_column(Integer)
    target: Mapped[int | None] = mapped_column(Integer)  # None = every other class
    eps: Mapped[float] = mapped_column(Float)
    norm: Mapped[str] = mapped_column(String(10), default="linf")
    method: Mapped[str] = mapped_column(String(10))  # lp / mip (robustness); mip (invertibility); vnncomp
    parameters: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # kind-specific (a VNN-COMP instance's text)

    __table_args__ = (
        Index("ix_queries_job_item", "job_id", "item", "eps"),
        Index("ix_queries_chunk", "chunk_id"),
        Index("ix_queries_label", "label"),
    )


class CertificateRow(Base):
    __tablename__ = "certificates"

    id: Mapped[int] = mapped_column(primary_key=True)
    query_id: Mapped[int] = mapped_column(ForeignKey("queries.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(10))
    verdict: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(50))
    stage: Mapped[str] = mapped_column(String(20), default="")
    lower: Mapped[float] = mapped_column(Float)
    upper: Mapped[float] = mapped_column(Float)
    gap: Mapped[float] = mapped_column(Float)
    counterexample: Mapped[list[float] | None] = mapped_column(JSON)
    counterexample_value: Mapped[float | None] = mapped_column(Float)
    targets: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    solver: Mapped[str] = mapped_column(String(50), default="")
    times: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    size: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)  # the engine's message when it raised
    wall_time: Mapped[float] = mapped_column(Float, default=0.0)
    answer: Mapped[str | None] = mapped_column(String(30))  # the kind's word: invertible / not invertible / holds ...
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # witness pair, radius evaluations, ...
    # the exact set certified: norm, eps, centre digest and input domain (workers.execution.input_set_record)
    input_set: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, server_default=func.now())

    __table_args__ = (
        UniqueConstraint("query_id", "method", name="uq_certificates_query_method"),
        Index("ix_certificates_job_verdict", "job_id", "verdict"),
    )


class SignatureRow(Base):
    """One tight constraint at a certificate's optimum (ConstraintTag as columns)."""

    __tablename__ = "signatures"

    id: Mapped[int] = mapped_column(primary_key=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(30))
    layer: Mapped[int | None] = mapped_column(Integer)
    neuron: Mapped[int | None] = mapped_column(Integer)
    index: Mapped[int | None] = mapped_column(Integer)
    pixel: Mapped[int | None] = mapped_column(Integer)  # input coordinate for input_lower / input_upper

    __table_args__ = (
        Index("ix_signatures_certificate", "certificate_id"),
        Index("ix_signatures_kind_pixel", "kind", "pixel"),
    )


class AttackRow(Base):
    """What the attack stage found for a query (a counterexample, re-evaluated, or none)."""

    __tablename__ = "attacks"

    id: Mapped[int] = mapped_column(primary_key=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id", ondelete="CASCADE"), unique=True)
    query_id: Mapped[int] = mapped_column(ForeignKey("queries.id", ondelete="CASCADE"))
    found: Mapped[bool] = mapped_column(default=False)
    margin: Mapped[float | None] = mapped_column(Float)
    point: Mapped[list[float] | None] = mapped_column(JSON)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)

    __table_args__ = (Index("ix_attacks_query", "query_id"),)
