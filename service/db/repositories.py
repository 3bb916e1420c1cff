"""Repositories: the only place with queries. They take a session and plain values and return rows,
values or None; they never raise HTTP errors and never commit (the caller owns the transaction),
except where a function says it commits because its writes must be durable one query at a time.
"""

from __future__ import annotations

import datetime as dt
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import orjson
from sqlalchemy import Table, and_, case, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, aliased

from .models import AttackRow, CertificateRow, ChunkRow, JobRow, NetworkAliasRow, NetworkRow, QueryRow, SignatureRow

ACTIVE = ("queued", "running")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _insert(session: Session, table):
    """A dialect insert that supports ON CONFLICT DO NOTHING (PostgreSQL and SQLite alike)."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _bulk_insert(session: Session, table: Table, rows: Sequence[dict[str, Any]], *,
                 conflict: Sequence[str] = (), returning: Sequence[str] = ()) -> list[tuple]:
    """Insert ``rows`` (one key set) in one statement; with ``conflict``, rows that clash on those columns
    are skipped; returns the ``returning`` columns of the rows inserted.

    On PostgreSQL the rows travel as one JSON document read by ``json_populate_recordset``: the statement's
    text is the same for any number of rows (neither SQLAlchemy nor psycopg re-compiles or re-parses it
    per batch) and the encoding is one ``orjson.dumps``. The multi-VALUES form cost about 0.6 ms a
    certificate here, this one a tenth of that. SQLite, in process, takes the plain executemany.
    """
    if not rows:
        return []
    columns = list(rows[0])
    if session.get_bind().dialect.name != "postgresql":
        stmt = _insert(session, table)
        if conflict:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(conflict))
        if returning:
            return [tuple(r) for r in session.execute(stmt.returning(*(table.c[c] for c in returning)), rows)]
        session.execute(stmt, rows)
        return []
    quote = postgresql.dialect().identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    sql = (f"INSERT INTO {quote(table.name)} ({names}) "
           f"SELECT {names} FROM json_populate_recordset(NULL::{quote(table.name)}, CAST(:rows AS json))")
    if conflict:
        sql += f" ON CONFLICT ({', '.join(quote(c) for c in conflict)}) DO NOTHING"
    if returning:
        sql += f" RETURNING {', '.join(quote(c) for c in returning)}"
    document = orjson.dumps([{c: _json_scalar(row[c]) for c in columns} for row in rows],
                            option=orjson.OPT_SERIALIZE_NUMPY).decode()
    result = session.execute(text(sql), {"rows": document})
    return [tuple(r) for r in result] if returning else []


def _json_scalar(value: Any) -> Any:
    """A column value inside the JSON document: JSON has no infinities, so a non-finite float travels as
    the text PostgreSQL's float input reads ('Infinity', '-Infinity', 'NaN')."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


# -- networks ---------------------------------------------------------------------------------------
def get_network(session: Session, network_id: int) -> NetworkRow | None:
    return session.get(NetworkRow, network_id)


def get_network_by_digest(session: Session, digest: str) -> NetworkRow | None:
    return session.scalar(select(NetworkRow).where(NetworkRow.digest == digest))


def get_network_by_name(session: Session, name: str) -> NetworkRow | None:
    return session.scalar(select(NetworkRow).where(NetworkRow.name == name).order_by(NetworkRow.id.desc()).limit(1))


def list_networks(session: Session) -> Sequence[NetworkRow]:
    return session.scalars(select(NetworkRow).order_by(NetworkRow.id)).all()


def add_network(session: Session, **values: Any) -> tuple[NetworkRow, bool]:
    """Register a network by content digest; returns (row, created). The same weights are stored once."""
    stmt = _insert(session, NetworkRow).values(**values).on_conflict_do_nothing(index_elements=["digest"])
    # RETURNING, not rowcount: on PostgreSQL (psycopg) the rowcount read -1, so every upload said created=false
    created = session.execute(stmt.returning(NetworkRow.id)).first() is not None
    row = get_network_by_digest(session, values["digest"])
    assert row is not None
    return row, created


def get_network_by_alias(session: Session, name: str) -> NetworkRow | None:
    return session.scalar(select(NetworkRow).join(NetworkAliasRow, NetworkAliasRow.network_id == NetworkRow.id)
                          .where(NetworkAliasRow.name == name))


def add_network_alias(session: Session, network_id: int, name: str) -> bool:
    """Record ``name`` as another name of network ``network_id``; False when that alias already exists."""
    stmt = _insert(session, NetworkAliasRow).values(network_id=network_id, name=name, created_at=_now())
    # RETURNING, not rowcount: psycopg's rowcount of an INSERT ... ON CONFLICT here reads -1
    stmt = stmt.on_conflict_do_nothing(index_elements=["name"]).returning(NetworkAliasRow.id)
    return session.execute(stmt).first() is not None


def network_aliases(session: Session, network_ids: Sequence[int]) -> dict[int, list[str]]:
    """Each network's aliases, oldest first (networks without any are absent)."""
    out: dict[int, list[str]] = {}
    if not network_ids:
        return out
    rows = session.execute(select(NetworkAliasRow.network_id, NetworkAliasRow.name)
                           .where(NetworkAliasRow.network_id.in_(list(network_ids))).order_by(NetworkAliasRow.id))
    for network_id, name in rows:
        out.setdefault(network_id, []).append(name)
    return out


# -- jobs, chunks, queries --------------------------------------------------------------------------
def create_job(
    session: Session,
    *,
    network_id: int,
    kind: str,
    parameters: dict[str, Any],
    created_by: str,
    chunks: Sequence[Sequence[dict[str, Any]]],
) -> tuple[JobRow, list[int]]:
    """A job and one chunk row per entry of ``chunks`` (each a non-empty list of queries, in order); returns
    (job, chunk ids in order). The queries themselves are stored by :func:`add_queries`, all at once or chunk by
    chunk (the caller's choice: the first chunk can start while the rest are written)."""
    if any(len(mine) < 1 for mine in chunks):
        raise ValueError(f"chunk sizes {[len(mine) for mine in chunks][:8]}... include an empty chunk")
    job = JobRow(
        network_id=network_id, kind=kind, parameters=parameters, created_by=created_by,
        total=sum(len(mine) for mine in chunks), status="queued", done=0, errors=0,
    )
    session.add(job)
    session.flush()
    rows = [dict(job_id=job.id, position=p, status="queued", attempts=0, worker="") for p in range(len(chunks))]
    inserted = _bulk_insert(session, ChunkRow.__table__, rows, returning=("id", "position"))
    return job, [cid for cid, _ in sorted(inserted, key=lambda r: r[1])]


def add_queries(session: Session, job_id: int, chunk_ids: Sequence[int],
                queries: Sequence[Sequence[dict[str, Any]]]) -> None:
    """Store each chunk's queries (``queries[i]`` belong to ``chunk_ids[i]``) in one statement. An ``input``
    may be a NumPy row (the plan's view, :func:`service.batches.plan_queries`): it is stored as a list."""
    rows = [dict(dict.fromkeys(_QUERY_FIELDS), **q, job_id=job_id, chunk_id=chunk_id)
            for chunk_id, mine in zip(chunk_ids, queries) for q in mine]
    for row in rows:
        if isinstance(row["input"], np.ndarray):
            row["input"] = row["input"].tolist()
    _bulk_insert(session, QueryRow.__table__, rows)


def fail_job(session: Session, job_id: int, message: str, chunk_ids: Sequence[int]) -> None:
    """Fail a job that cannot run to its end, with those of ``chunk_ids`` still queued (the ones never sent
    to a worker): a job the service could only partly store or enqueue must not look as if it were coming."""
    session.execute(update(ChunkRow).where(ChunkRow.id.in_(list(chunk_ids)), ChunkRow.status == "queued")
                    .values(status="failed", error=message[:4000], finished_at=_now()))
    session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(ACTIVE))
                    .values(status="failed", error=message[:4000], finished_at=_now()))


def mean_query_seconds(session: Session, network_id: int, methods: Sequence[str], *, recent_jobs: int = 5,
                       kind: str = "robustness") -> float | None:
    """Mean engine seconds per answered query of the network's latest jobs of ``kind``, for these methods
    (None without history): what sizes the next job's chunks (:mod:`service.chunking`)."""
    jobs = (select(JobRow.id).where(JobRow.network_id == network_id, JobRow.kind == kind)
            .order_by(JobRow.id.desc()).limit(recent_jobs).scalar_subquery())
    value = session.scalar(select(func.avg(CertificateRow.wall_time)).where(
        CertificateRow.job_id.in_(jobs), CertificateRow.method.in_(list(methods)), CertificateRow.error.is_(None)))
    return None if value is None else float(value)


_QUERY_FIELDS = ("item", "source_index", "input", "label", "target", "eps", "norm", "method", "parameters")


def get_job(session: Session, job_id: int) -> JobRow | None:
    return session.get(JobRow, job_id)


def list_jobs(session: Session, *, offset: int = 0, limit: int = 50) -> tuple[int, Sequence[JobRow]]:
    total = session.scalar(select(func.count()).select_from(JobRow)) or 0
    rows = session.scalars(select(JobRow).order_by(JobRow.id.desc()).offset(offset).limit(limit)).all()
    return total, rows


def chunk_ids(session: Session, job_id: int, *, statuses: Iterable[str] | None = None) -> list[int]:
    stmt = select(ChunkRow.id).where(ChunkRow.job_id == job_id).order_by(ChunkRow.position)
    if statuses is not None:
        stmt = stmt.where(ChunkRow.status.in_(list(statuses)))
    return list(session.scalars(stmt))


def cancel_job(session: Session, job_id: int) -> bool:
    """Mark a queued or running job cancelled; workers skip its remaining queries. False if not active."""
    result = session.execute(
        update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(ACTIVE)).values(status="cancelled", finished_at=_now())
    )
    session.execute(update(ChunkRow).where(ChunkRow.job_id == job_id, ChunkRow.status == "queued").values(status="cancelled"))
    return result.rowcount == 1


def job_status(session: Session, job_id: int) -> str | None:
    return session.scalar(select(JobRow.status).where(JobRow.id == job_id))


@dataclass(frozen=True)
class Claim:
    """What a worker learns when it claims a chunk: the chunk after the claim, its job and the job's network."""

    chunk_id: int
    job_id: int
    attempts: int  # deliveries of this chunk so far, this one included
    job_status: str  # as the claim found it ('cancelled' stops the chunk)
    job_kind: str
    job_parameters: dict[str, Any]
    network_id: int
    network_digest: str


def unfinished_chunks(session: Session, job_id: int) -> list[tuple[int, str, dt.datetime | None, list[float | None]]]:
    """(chunk id, status, started_at, its queries' own timeouts) of a job's chunks that are queued or running."""
    stmt = (select(ChunkRow.id, ChunkRow.status, ChunkRow.started_at, QueryRow.parameters)
            .join(QueryRow, QueryRow.chunk_id == ChunkRow.id)
            .where(ChunkRow.job_id == job_id, ChunkRow.status.in_(("queued", "running"))).order_by(ChunkRow.id))
    out: dict[int, tuple[int, str, dt.datetime | None, list[float | None]]] = {}
    for chunk_id, status, started, parameters in session.execute(stmt):
        entry = out.setdefault(chunk_id, (chunk_id, status, started, []))
        entry[3].append((parameters or {}).get("timeout"))
    return list(out.values())


def claim_chunk(session: Session, chunk_id: int, worker: str) -> Claim | None:
    """Record that ``worker`` starts (or restarts) a chunk (attempts + 1; a cancelled chunk stays
    cancelled) and move its job from queued to running; returns the claim, or None for no such chunk.

    A worker pays this per chunk: on PostgreSQL it is one statement (the two updates as CTEs, then the
    job and network read beside them); SQLite takes an UPDATE ... RETURNING and two more."""
    now = _now()
    if session.get_bind().dialect.name == "postgresql":
        row = session.execute(_CLAIM_POSTGRESQL, dict(chunk_id=chunk_id, worker=worker[:200], now=now)).one_or_none()
        return None if row is None else Claim(*row)
    chunk = session.execute(
        update(ChunkRow).where(ChunkRow.id == chunk_id)
        .values(attempts=ChunkRow.attempts + 1, worker=worker[:200], started_at=now,
                status=case((ChunkRow.status == "cancelled", "cancelled"), else_="running"))
        .returning(ChunkRow.job_id, ChunkRow.attempts)
    ).one_or_none()
    if chunk is None:
        return None
    job_id, attempts = chunk
    job = session.execute(
        select(JobRow.status, JobRow.kind, JobRow.parameters, JobRow.network_id, NetworkRow.digest)
        .join(NetworkRow, NetworkRow.id == JobRow.network_id).where(JobRow.id == job_id)
    ).one()
    session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == "queued").values(status="running", started_at=now))
    return Claim(chunk_id, job_id, attempts, job.status, job.kind, dict(job.parameters or {}), job.network_id, job.digest)


_CLAIM_POSTGRESQL = text("""
WITH k AS (UPDATE chunks SET attempts = attempts + 1, worker = :worker, started_at = CAST(:now AS timestamptz),
                             status = CASE WHEN status = 'cancelled' THEN 'cancelled' ELSE 'running' END
           WHERE id = :chunk_id RETURNING id, job_id, attempts),
j AS (UPDATE jobs SET status = 'running', started_at = CAST(:now AS timestamptz)
      FROM k WHERE jobs.id = k.job_id AND jobs.status = 'queued')
SELECT k.id, k.job_id, k.attempts, jobs.status, jobs.kind, coalesce(jobs.parameters, '{}'::json), jobs.network_id,
       networks.digest
FROM k JOIN jobs ON jobs.id = k.job_id JOIN networks ON networks.id = jobs.network_id""")


def finish_chunk(session: Session, chunk_id: int, status: str = "done") -> None:
    session.execute(update(ChunkRow).where(ChunkRow.id == chunk_id).values(status=status, finished_at=_now()))


def fail_chunk(session: Session, chunk_id: int, message: str) -> None:
    """A chunk hit an error that is not an answer (a bug, a missing engine): fail it and its job, loudly."""
    chunk = session.get(ChunkRow, chunk_id)
    if chunk is None:
        return
    session.execute(update(ChunkRow).where(ChunkRow.id == chunk_id).values(status="failed", error=message[:4000], finished_at=_now()))
    session.execute(update(JobRow).where(JobRow.id == chunk.job_id, JobRow.status.in_(ACTIVE))
                    .values(status="failed", error=f"chunk {chunk.position}: {message}"[:4000], finished_at=_now()))


def chunk_job_kind(session: Session, chunk_id: int) -> str | None:
    """The kind of the job a chunk belongs to (None: no such chunk)."""
    return session.scalar(select(JobRow.kind).join(ChunkRow, ChunkRow.job_id == JobRow.id).where(ChunkRow.id == chunk_id))


def pending_queries(session: Session, chunk_id: int) -> Sequence[QueryRow]:
    """Queries of a chunk that have no certificate yet (a redelivered chunk resumes where it stopped)."""
    answered = select(CertificateRow.id).where(CertificateRow.query_id == QueryRow.id).exists()
    return session.scalars(select(QueryRow).where(QueryRow.chunk_id == chunk_id, ~answered).order_by(QueryRow.id)).all()


@dataclass(frozen=True)
class Answer:
    """One query's certificate as column values, with its tight constraints and attack row."""

    query: QueryRow
    certificate: dict[str, Any]
    signatures: Sequence[dict[str, Any]] = ()
    attack: dict[str, Any] | None = None


def store_answers(session: Session, answers: Sequence[Answer], *, finish: tuple[int, str] | None = None,
                  early: "EarlyStore | None" = None) -> int:
    """Store certificates once each: a second store of the same (query, method) is a no-op.

    Signatures, attack rows and the jobs' progress counters are written only for the certificates this
    call inserted, in the caller's transaction, so counts stay exact when a task runs twice. With
    ``finish=(chunk_id, status)`` the chunk's status is written in the same transaction; with ``early``
    (a settled :func:`send_answers`) its certificates are counted in the job's progress too. Returns how
    many certificates were inserted, ``early``'s included.

    PostgreSQL gets all of it as one statement (data-modifying CTEs over one JSON text per table, see
    :func:`_store_statement`): a worker pays one round trip per flush, whatever the number of answers.
    SQLite, in process, takes a few executemany statements.
    """
    if session.get_bind().dialect.name == "postgresql":
        return _store_answers_postgresql(session, answers, finish, early)
    stored = _store_answers_generic(session, answers) if answers else 0
    if finish is not None:
        finish_chunk(session, *finish)
    return stored


@dataclass
class EarlyStore:
    """Answers sent to PostgreSQL by :func:`send_answers`: ``inserted`` and ``errors`` once settled."""

    job_id: int
    pipeline: Any = None
    cursor: Any = None
    inserted: int = 0
    errors: int = 0

    def settle(self) -> "EarlyStore":
        """Wait for the server (long done, usually) and read what it inserted; a second call is a no-op.
        The server's error, if any, is raised as SQLAlchemy's (an ``OperationalError`` is transient)."""
        if self.pipeline is not None:
            pipeline, self.pipeline = self.pipeline, None
            with _as_sqlalchemy_error():
                pipeline.__exit__(None, None, None)  # syncs
                self.inserted, self.errors = self.cursor.fetchone()
        return self


@contextmanager
def _as_sqlalchemy_error():
    """psycopg's errors, raised where SQLAlchemy is bypassed, as the ones SQLAlchemy would raise (callers and
    Celery's retry policy know those)."""
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        raise DBAPIError.instance("early store", None, exc, psycopg.Error) from exc


def send_answers(session: Session, answers: Sequence[Answer]) -> EarlyStore | None:
    """Start storing ``answers`` without waiting for the server: their certificates, signatures and attack
    rows (not the job's counters), in the caller's transaction, sent in psycopg's pipeline mode.

    Why: most of a store's cost is the server's (parsing the JSON rows, index and foreign-key checks), and
    the server is another process. A worker that sends the answers its cascade decided early, and goes
    on with the LP and MIP stages, finds them written when it settles (:meth:`EarlyStore.settle`); the
    chunk's last store then carries only the rest. The job's row is not updated here: its lock would be
    held while the engine works and stall the other workers' stores; :func:`store_answers` counts the early
    certificates (``early=``) when the chunk's last answers are stored. The caller settles before any other
    statement on the session. Returns None (store them with the rest) where the database is not
    PostgreSQL or there is nothing to send."""
    if not answers or session.get_bind().dialect.name != "postgresql":
        return None
    raw = session.connection().connection.driver_connection
    early = EarlyStore(job_id=answers[0].query.job_id)
    parameters = _store_parameters(answers)
    with _as_sqlalchemy_error():
        pipeline = raw.pipeline()
        pipeline.__enter__()
        try:
            early.cursor = raw.cursor()
            early.cursor.execute(_EARLY_STATEMENT, parameters)
        except BaseException as exc:
            pipeline.__exit__(type(exc), exc, exc.__traceback__)
            raise
    early.pipeline = pipeline
    return early


_CERTIFICATE_COLUMNS = tuple(c.name for c in CertificateRow.__table__.columns if c.name not in ("id", "created_at"))
_SIGNATURE_COLUMNS = ("kind", "layer", "neuron", "index", "pixel")


def _certificate_rows(answers: Sequence[Answer]) -> list[dict[str, Any]]:
    """One key set for every row (the batched INSERT needs it)."""
    return [dict(dict(answer=None, extra=None, input_set=None), **a.certificate, query_id=a.query.id, job_id=a.query.job_id,
                 method=a.query.method) for a in answers]


def _store_statement(finish: bool, *, counters: bool = True) -> str:
    """The PostgreSQL store as one statement: insert the certificates (skipping those already stored),
    then, joined on what that insert returned, their signatures, their attack rows and (``counters``) the
    jobs' progress counters, and (``finish``) the chunk's status. Data-modifying CTEs all run, and see the
    certificates' RETURNING rows, whether or not the final SELECT reads them. Each table's rows come as
    their own JSON text: a shared document would be parsed again by every ``->`` that takes a part of it.
    The counters also add an early store's certificates (``:early_job``, ``:early_done``, ``:early_errors``)."""
    quote = postgresql.dialect().identifier_preparer.quote
    certificate = ", ".join(quote(c) for c in _CERTIFICATE_COLUMNS)
    signature = ", ".join(f"r.{quote(c)}" for c in _SIGNATURE_COLUMNS)
    signature_types = ", ".join(f"{quote(c)} {'text' if c == 'kind' else 'integer'}" for c in _SIGNATURE_COLUMNS)
    active = ", ".join(f"'{s}'" for s in ACTIVE)
    finishes = f"jobs.done + n.done >= jobs.total AND jobs.status IN ({active})"  # on the old row
    failed = "CASE WHEN error IS NOT NULL AND error <> '' THEN 1 ELSE 0 END"
    sql = f"""
WITH c AS (INSERT INTO certificates ({certificate})
      SELECT {certificate} FROM json_populate_recordset(NULL::certificates, CAST(:certificates AS json))
      ON CONFLICT (query_id, method) DO NOTHING
      RETURNING id, query_id, job_id, error),
s AS (INSERT INTO signatures (certificate_id, {", ".join(quote(c) for c in _SIGNATURE_COLUMNS)})
      SELECT c.id, {signature}
      FROM json_to_recordset(CAST(:signatures AS json)) AS r(query_id integer, {signature_types})
      JOIN c ON c.query_id = r.query_id),
a AS (INSERT INTO attacks (certificate_id, query_id, found, margin, point, seconds)
      SELECT c.id, r.query_id, r.found, r.margin, r.point, r.seconds
      FROM json_populate_recordset(NULL::attacks, CAST(:attacks AS json)) AS r
      JOIN c ON c.query_id = r.query_id)"""
    if not counters:
        return sql + f"\nSELECT count(*), coalesce(sum({failed}), 0) FROM c"
    sql += f""",
n AS (SELECT job_id, sum(done) AS done, sum(errors) AS errors
      FROM (SELECT job_id, 1 AS done, {failed} AS errors FROM c
            UNION ALL SELECT CAST(:early_job AS integer), CAST(:early_done AS integer), CAST(:early_errors AS integer)
            WHERE CAST(:early_done AS integer) > 0) AS e
      GROUP BY job_id),
j AS (UPDATE jobs SET done = jobs.done + n.done, errors = jobs.errors + n.errors,
             status = CASE WHEN {finishes} THEN 'done' ELSE jobs.status END,
             finished_at = CASE WHEN {finishes} THEN CAST(:now AS timestamptz) ELSE jobs.finished_at END
      FROM n WHERE jobs.id = n.job_id)"""
    if finish:
        sql += """,
k AS (UPDATE chunks SET status = :status, finished_at = CAST(:now AS timestamptz) WHERE id = :chunk_id)"""
    return sql + "\nSELECT count(*) FROM c"


_STORE_STATEMENTS = {finish: text(_store_statement(finish)) for finish in (False, True)}
# sent through psycopg itself (pipeline mode), so in its own parameter style
_EARLY_STATEMENT = str(text(_store_statement(False, counters=False)).compile(dialect=postgresql.psycopg.dialect()))


def _store_parameters(answers: Sequence[Answer]) -> dict[str, Any]:
    documents = dict(  # one JSON text per table: each is parsed once, by the function that reads it
        certificates=[{c: _json_scalar(row.get(c)) for c in _CERTIFICATE_COLUMNS} for row in _certificate_rows(answers)],
        signatures=[dict(s, query_id=a.query.id) for a in answers for s in a.signatures],
        attacks=[dict(a.attack, query_id=a.query.id) for a in answers if a.attack is not None],
    )
    return {name: orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY).decode() for name, rows in documents.items()}


def _store_answers_postgresql(session: Session, answers: Sequence[Answer], finish: tuple[int, str] | None,
                              early: EarlyStore | None) -> int:
    early_done = 0 if early is None else early.inserted
    if not answers and finish is None and not early_done:
        return 0
    parameters = _store_parameters(answers)
    parameters.update(now=_now(), early_job=None if early is None else early.job_id, early_done=early_done,
                      early_errors=0 if early is None else early.errors)
    if finish is not None:
        parameters.update(chunk_id=finish[0], status=finish[1])
    return early_done + int(session.execute(_STORE_STATEMENTS[finish is not None], parameters).scalar_one())


def _store_answers_generic(session: Session, answers: Sequence[Answer]) -> int:
    by_query = {a.query.id: a for a in answers}
    inserted = _bulk_insert(session, CertificateRow.__table__, _certificate_rows(answers), conflict=("query_id", "method"),
                            returning=("id", "query_id"))
    if not inserted:
        return 0
    signatures = [dict(s, certificate_id=cid) for cid, qid in inserted for s in by_query[qid].signatures]
    _bulk_insert(session, SignatureRow.__table__, signatures)
    attacks = [dict(by_query[qid].attack, certificate_id=cid, query_id=qid) for cid, qid in inserted
               if by_query[qid].attack is not None]
    _bulk_insert(session, AttackRow.__table__, attacks)
    per_job: dict[int, list[int]] = {}
    for _, qid in inserted:
        counts = per_job.setdefault(by_query[qid].query.job_id, [0, 0])
        counts[0] += 1
        counts[1] += 1 if by_query[qid].certificate.get("error") else 0
    for job_id, (done, failed) in per_job.items():
        finishes = and_(JobRow.done + done >= JobRow.total, JobRow.status.in_(ACTIVE))  # on the old row
        session.execute(
            update(JobRow).where(JobRow.id == job_id).values(
                done=JobRow.done + done, errors=JobRow.errors + failed,
                status=case((finishes, "done"), else_=JobRow.status),
                finished_at=case((finishes, _now()), else_=JobRow.finished_at),
            )
        )
    return len(inserted)


def store_certificate(session: Session, query: QueryRow, certificate: dict[str, Any],
                      signatures: Sequence[dict[str, Any]] = (), attack: dict[str, Any] | None = None) -> bool:
    """:func:`store_answers` for one query; True if this call inserted it."""
    return store_answers(session, [Answer(query, certificate, signatures, attack)]) == 1


# -- results ----------------------------------------------------------------------------------------
def verdict_counts(session: Session, job_id: int) -> dict[tuple[str, str], int]:
    """(method, verdict) -> number of certificates of a job."""
    rows = session.execute(
        select(CertificateRow.method, CertificateRow.verdict, func.count())
        .where(CertificateRow.job_id == job_id).group_by(CertificateRow.method, CertificateRow.verdict)
    )
    return {(m, v): n for m, v, n in rows}


def chunk_counts(session: Session, job_id: int) -> dict[str, int]:
    rows = session.execute(select(ChunkRow.status, func.count()).where(ChunkRow.job_id == job_id).group_by(ChunkRow.status))
    return {s: n for s, n in rows}


@dataclass(frozen=True)
class ResultFilter:
    verdict: str | None = None
    method: str | None = None
    eps: float | None = None
    label: int | None = None


def list_results(
    session: Session, job_id: int, filters: ResultFilter = ResultFilter(), *, offset: int = 0, limit: int = 100
) -> tuple[int, list[tuple[QueryRow, CertificateRow]]]:
    """Answered queries of a job with their certificates, in query order, filtered and paged.

    The page is chosen on the two ids alone, then only its rows are read whole: sorting the job's full rows
    (certificates carry JSON) to skip ``offset`` of them cost ~0.1 s a page on a 10,000-query job, spilling
    the sort to disk (bench/load.py). ``CertificateRow.job_id`` (a certificate's job is its query's) lets the
    database read the job's certificates by index instead of scanning every job's."""
    conditions = [QueryRow.job_id == job_id, CertificateRow.job_id == job_id]
    if filters.verdict is not None:
        conditions.append(CertificateRow.verdict == filters.verdict)
    if filters.method is not None:
        conditions.append(QueryRow.method == filters.method)
    if filters.eps is not None:  # eps travels as text in URLs: match to a relative 1e-9
        conditions.append(func.abs(QueryRow.eps - filters.eps) <= 1e-9 * max(1.0, abs(filters.eps)))
    if filters.label is not None:
        conditions.append(QueryRow.label == filters.label)
    ids = (select(QueryRow.id.label("qid"), CertificateRow.id.label("cid"))
           .join(CertificateRow, CertificateRow.query_id == QueryRow.id).where(*conditions))
    total = session.scalar(select(func.count()).select_from(ids.subquery())) or 0
    page = ids.order_by(QueryRow.id, CertificateRow.id).offset(offset).limit(limit).subquery()
    rows = session.execute(select(QueryRow, CertificateRow).join(page, page.c.cid == CertificateRow.id)
                           .join(QueryRow, QueryRow.id == page.c.qid).order_by(page.c.qid, page.c.cid)).all()
    return total, [(q, c) for q, c in rows]


def get_certificate(session: Session, certificate_id: int) -> tuple[QueryRow, CertificateRow] | None:
    row = session.execute(
        select(QueryRow, CertificateRow).join(CertificateRow, CertificateRow.query_id == QueryRow.id)
        .where(CertificateRow.id == certificate_id)
    ).first()
    return None if row is None else (row[0], row[1])


def signatures_of(session: Session, certificate_ids: Sequence[int]) -> dict[int, list[SignatureRow]]:
    out: dict[int, list[SignatureRow]] = {i: [] for i in certificate_ids}
    if certificate_ids:
        for row in session.scalars(
            select(SignatureRow).where(SignatureRow.certificate_id.in_(list(certificate_ids))).order_by(SignatureRow.id)
        ):
            out[row.certificate_id].append(row)
    return out


def attacks_of(session: Session, certificate_ids: Sequence[int]) -> dict[int, AttackRow]:
    if not certificate_ids:
        return {}
    rows = session.scalars(select(AttackRow).where(AttackRow.certificate_id.in_(list(certificate_ids))))
    return {r.certificate_id: r for r in rows}


def comparison_pairs(session: Session, job_id: int) -> list[tuple[QueryRow, CertificateRow | None, CertificateRow | None,
                                                                   CertificateRow | None]]:
    """Per (item, eps) of a job: the LP query and the LP, MIP and k-neuron LP certificates (None while
    unanswered, or, for the k-LP, when the job did not ask for it)."""
    lp_q, mip_q, klp_q = aliased(QueryRow), aliased(QueryRow), aliased(QueryRow)
    lp_c, mip_c, klp_c = aliased(CertificateRow), aliased(CertificateRow), aliased(CertificateRow)

    def same_query(other, method: str):
        return and_(other.job_id == lp_q.job_id, other.item == lp_q.item, other.eps == lp_q.eps, other.method == method,
                    func.coalesce(other.target, -1) == func.coalesce(lp_q.target, -1))

    rows = session.execute(
        select(lp_q, lp_c, mip_c, klp_c)
        .join(mip_q, same_query(mip_q, "mip"))
        .outerjoin(klp_q, same_query(klp_q, "klp"))
        .outerjoin(lp_c, lp_c.query_id == lp_q.id)
        .outerjoin(mip_c, mip_c.query_id == mip_q.id)
        .outerjoin(klp_c, klp_c.query_id == klp_q.id)
        .where(lp_q.job_id == job_id, lp_q.method == "lp")
        .order_by(lp_q.item, lp_q.eps)
    ).all()
    return [(q, a, b, c) for q, a, b, c in rows]


def networks_with_certificates(session: Session, kinds: Sequence[str]) -> list[NetworkRow]:
    """Networks that have at least one stored certificate of a job of these kinds, by id."""
    jobs = (select(JobRow.network_id).join(CertificateRow, CertificateRow.job_id == JobRow.id)
            .where(JobRow.kind.in_(list(kinds))).distinct())
    return list(session.scalars(select(NetworkRow).where(NetworkRow.id.in_(jobs)).order_by(NetworkRow.id)))


def _signature_scope(digit: int, job_id: int | None, method: str | None, eps: float | None, verdict: str | None,
                     network_id: int | None = None, kinds: Sequence[str] | None = None):
    """Conditions on (QueryRow, CertificateRow) of one digit; ``network_id`` and ``kinds`` (job kinds)
    restrict the jobs the certificates come from."""
    conditions = [QueryRow.label == digit]
    if network_id is not None or kinds is not None:
        jobs = select(JobRow.id)
        if network_id is not None:
            jobs = jobs.where(JobRow.network_id == network_id)
        if kinds is not None:
            jobs = jobs.where(JobRow.kind.in_(list(kinds)))
        conditions.append(QueryRow.job_id.in_(jobs))
    if job_id is not None:
        conditions.append(QueryRow.job_id == job_id)
    if method is not None:
        conditions.append(QueryRow.method == method)
    if eps is not None:
        conditions.append(func.abs(QueryRow.eps - eps) <= 1e-9 * max(1.0, abs(eps)))
    if verdict is not None:
        conditions.append(CertificateRow.verdict == verdict)
    return conditions


def count_certificates_for_digit(session: Session, digit: int, *, job_id=None, method=None, eps=None, verdict=None,
                                 network_id=None, kinds=None) -> int:
    stmt = (select(func.count()).select_from(CertificateRow).join(QueryRow, QueryRow.id == CertificateRow.query_id)
            .where(*_signature_scope(digit, job_id, method, eps, verdict, network_id, kinds)))
    return session.scalar(stmt) or 0


def pixel_frequencies(session: Session, digit: int, *, job_id=None, method=None, eps=None, verdict=None,
                      network_id=None, kinds=None) -> list[tuple[str, int, int]]:
    """(kind, pixel, number of certificates where that pixel sits at that bound) for one digit: GROUP BY."""
    stmt = (
        select(SignatureRow.kind, SignatureRow.pixel, func.count(func.distinct(SignatureRow.certificate_id)))
        .join(CertificateRow, CertificateRow.id == SignatureRow.certificate_id)
        .join(QueryRow, QueryRow.id == CertificateRow.query_id)
        .where(SignatureRow.pixel.is_not(None), *_signature_scope(digit, job_id, method, eps, verdict, network_id, kinds))
        .group_by(SignatureRow.kind, SignatureRow.pixel)
        .order_by(SignatureRow.kind, SignatureRow.pixel)
    )
    return [(k, p, n) for k, p, n in session.execute(stmt)]


def envelope_activity(session: Session, digit: int, *, job_id=None, method=None, eps=None, verdict=None,
                      network_id=None, kinds=None) -> list[tuple[str, int | None, int | None, int | None, int]]:
    """(kind, layer, neuron, index, count) of the non-input tight constraints for one digit: GROUP BY."""
    stmt = (
        select(SignatureRow.kind, SignatureRow.layer, SignatureRow.neuron, SignatureRow.index,
               func.count(func.distinct(SignatureRow.certificate_id)))
        .join(CertificateRow, CertificateRow.id == SignatureRow.certificate_id)
        .join(QueryRow, QueryRow.id == CertificateRow.query_id)
        .where(SignatureRow.pixel.is_(None), *_signature_scope(digit, job_id, method, eps, verdict, network_id, kinds))
        .group_by(SignatureRow.kind, SignatureRow.layer, SignatureRow.neuron, SignatureRow.index)
        .order_by(SignatureRow.layer, SignatureRow.neuron, SignatureRow.kind, SignatureRow.index)
    )
    return [tuple(r) for r in session.execute(stmt)]


def job_signature_tags(session: Session, job_id: int) -> Iterable[tuple[int, int, str, str | None, int | None,
                                                                       int | None, int | None, int | None]]:
    """(certificate id, label, method, kind, layer, neuron, index, pixel) of every tight constraint of a job's
    certificates, certificate by certificate (kind None: a certificate without any); streamed in batches."""
    stmt = (
        select(CertificateRow.id, QueryRow.label, QueryRow.method, SignatureRow.kind, SignatureRow.layer,
               SignatureRow.neuron, SignatureRow.index, SignatureRow.pixel)
        .join(QueryRow, QueryRow.id == CertificateRow.query_id)
        .outerjoin(SignatureRow, SignatureRow.certificate_id == CertificateRow.id)
        .where(CertificateRow.job_id == job_id, CertificateRow.error.is_(None))
        .order_by(CertificateRow.id)
        .execution_options(yield_per=20_000)
    )
    return (tuple(row) for row in session.execute(stmt))


def job_certificate_bounds(session: Session, job_id: int) -> list[tuple[int, str, str, float, bool]]:
    """(label, method, verdict, upper, failed) of every answered query of a job: a signature's ``upper`` is
    its sound bound on the maximum; ``failed`` when the engine raised (no optimum)."""
    stmt = (select(QueryRow.label, QueryRow.method, CertificateRow.verdict, CertificateRow.upper,
                   CertificateRow.error.is_not(None))
            .join(CertificateRow, CertificateRow.query_id == QueryRow.id).where(QueryRow.job_id == job_id))
    return [tuple(r) for r in session.execute(stmt)]


def certificates_for_digit(session: Session, digit: int, *, job_id=None, method=None, eps=None, verdict=None,
                           network_id=None, kinds=None, offset: int = 0, limit: int = 50) -> list[tuple[QueryRow, CertificateRow]]:
    stmt = (
        select(QueryRow, CertificateRow).join(CertificateRow, CertificateRow.query_id == QueryRow.id)
        .where(*_signature_scope(digit, job_id, method, eps, verdict, network_id, kinds)).order_by(CertificateRow.id).offset(offset).limit(limit)
    )
    return [(q, c) for q, c in session.execute(stmt)]


def outcomes(session: Session, job_id: int) -> list[tuple[int, int, float, str, str, str]]:
    """(item, label, eps, method, verdict, stage) of every answered query of a job, in query order: what
    the robustness curves count (``reports.robustness_curves``)."""
    stmt = (select(QueryRow.item, QueryRow.label, QueryRow.eps, QueryRow.method, CertificateRow.verdict,
                   CertificateRow.stage)
            .join(CertificateRow, CertificateRow.query_id == QueryRow.id)
            .where(QueryRow.job_id == job_id).order_by(QueryRow.id))
    return [tuple(r) for r in session.execute(stmt)]
