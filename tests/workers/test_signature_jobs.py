"""Signature jobs in the worker: what a certificate row and its signature rows hold, the verdict mapping,
an unsound answer turned into an unknown, and chunks sized by each method's cost."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sqlalchemy import select

from polycert.formulations.network import Network
from polycert import batches
from polycert.db.models import CertificateRow, SignatureRow
from polycert.workers import signatures as sigjobs
from polycert.workers.execution import run_chunk


def gelu_network() -> Network:
    rng = np.random.default_rng(4)
    return Network.from_arrays([rng.normal(size=(3, 4)), rng.normal(size=(2, 3))], [np.zeros(3), np.zeros(2)],
                               ["gelu", "identity"], name="sig-toy")


def make_job(session, methods="both", chunk_size=None, **extra):
    network = gelu_network()
    row, _ = batches.register_network(session, network, "npz")
    x = np.random.default_rng(1).uniform(size=(3, 4))
    request = batches.SignatureRequest(kind="signature", network_id=row.id, inputs=x.tolist(),
                                       labels=network.predict(x).tolist(), eps=[0.1], methods=methods, **extra)
    job, chunks = batches.create_batch(session, request, created_by="test", chunk_size=chunk_size)
    session.commit()
    return job, chunks, network, x


def test_a_signature_chunk_stores_bound_achieved_point_class_and_the_tight_kinds_of_its_method(session):
    job, chunks, network, x = make_job(session, target_class=1)
    for chunk in chunks:
        run_chunk(session, chunk)
    certs = session.scalars(select(CertificateRow).where(CertificateRow.job_id == job.id)).all()
    assert len(certs) == 6 and session.get(type(job), job.id).status == "done"
    for cert in certs:
        assert cert.error is None and cert.extra["class"] == 1 and cert.counterexample is None
        point = np.asarray(cert.extra["point"])
        assert float(network.forward(point)[1]) == cert.lower <= cert.upper
        kinds = Counter(r.kind for r in session.scalars(select(SignatureRow).where(SignatureRow.certificate_id == cert.id)))
        assert kinds["region"] == 3  # one per hidden neuron
        if cert.method == "lp":
            assert (cert.verdict, cert.answer) == ("verified", "bound") and "segment" not in kinds
            assert kinds["envelope_lower"] + kinds["envelope_upper"] > 0
        else:
            # the exact optimum is read off the real network at its input: regions (above), no relaxation lines
            assert not kinds["envelope_lower"] and not kinds["envelope_upper"]
            assert cert.upper - cert.lower <= 1e-4 + 1e-12 and (cert.verdict, cert.answer) == ("verified", "optimum")
            closed = cert.upper - cert.lower <= 1e-4
            assert (cert.verdict, cert.answer) == (("verified", "optimum") if closed else ("unknown", "bound"))


def test_a_bound_below_a_point_the_network_attains_becomes_an_unknown_with_the_message(session, monkeypatch):
    import polycert.formulations.signatures as engine

    real = engine.maximize_logit_batch

    def too_low(*args, **kwargs):
        from dataclasses import replace

        return [replace(s, bound=s.achieved - 1.0) for s in real(*args, **kwargs)]

    monkeypatch.setattr(engine, "maximize_logit_batch", too_low)
    job, chunks, _, _ = make_job(session, methods="lp")
    for chunk in chunks:
        run_chunk(session, chunk)
    certs = session.scalars(select(CertificateRow).where(CertificateRow.job_id == job.id)).all()
    assert len(certs) == 3
    for cert in certs:
        assert (cert.verdict, cert.answer) == ("unknown", "unknown")
        assert "UnsoundAnswerError" in cert.error and "known point" in cert.error
        assert cert.upper == float("inf")


def test_signature_queries_come_method_by_method_with_mip_chunks_smaller_than_lp_ones(session):
    job, chunks, _, _ = make_job(session)
    from polycert.db import repositories as repo

    per_chunk = [[q.method for q in repo.pending_queries(session, c)] for c in chunks]
    assert all(len(set(methods)) == 1 for methods in per_chunk)  # no chunk mixes LP and MIP
    lp = [len(m) for m in per_chunk if m[0] == "lp"]
    mip = [len(m) for m in per_chunk if m[0] == "mip"]
    assert sum(lp) == sum(mip) == 3 and max(mip) <= max(lp)
    from polycert import chunking
    from polycert.workers.signatures import PRIOR_SECONDS

    # a MIP signature costs ~50x an LP one: with no history its chunks are sized far smaller
    assert chunking.largest_chunk(PRIOR_SECONDS["mip"], 0.5) < chunking.largest_chunk(PRIOR_SECONDS["lp"], 0.5)


def test_the_verdict_of_an_open_mip_bracket_names_the_limit_that_stopped_it():
    from polycert.formulations.signatures import Signature

    sig = Signature(cls=0, eps=0.1, method="mip", bound=1.0, achieved=0.5, point=np.zeros(2),
                    pixels_lower=np.zeros(2, bool), pixels_upper=np.zeros(2, bool), lines=(), regions=np.zeros(0, int))
    assert sigjobs.verdict_of(sig, "mip", 1e-4, elapsed=10.0, time_limit=10.0) == ("unknown", "time limit", "bound")
    assert sigjobs.verdict_of(sig, "mip", 1e-4, elapsed=1.0, time_limit=10.0) == ("unknown", "refinement limit", "bound")
    assert sigjobs.verdict_of(sig, "mip", 0.6, elapsed=1.0, time_limit=10.0) == ("verified", None, "optimum")
    assert sigjobs.verdict_of(sig, "lp", 1e-4, elapsed=1.0, time_limit=10.0) == ("verified", None, "bound")


@pytest.mark.parametrize("body", [
    dict(eps=[0.1], methods="lp"),  # neither dataset nor inputs
    dict(inputs=[[0.1] * 4], eps=[0.1]),  # no labels
    dict(dataset={"start": 0, "stop": 1}, eps=[1.5]),
])
def test_a_malformed_signature_request_is_refused_with_a_reason(body):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        batches.SignatureRequest(kind="signature", network="polycert-tiny", **body)


def test_a_group_whose_engine_call_fails_is_answered_query_by_query_and_only_the_failing_one_is_unknown(session, monkeypatch):
    import polycert.formulations.signatures as engine
    from polycert.formulations.errors import SolverError

    real = engine.maximize_logit_batch
    job, chunks, _, x = make_job(session, methods="lp", chunk_size=3)

    def fails_on_the_second(network, xs, *args, **kwargs):
        if any(np.array_equal(row, x[1]) for row in xs):
            raise SolverError("the LP solver gave up")
        return real(network, xs, *args, **kwargs)

    monkeypatch.setattr(engine, "maximize_logit_batch", fails_on_the_second)
    (chunk,) = chunks
    run_chunk(session, chunk)
    rows = session.execute(select(CertificateRow.verdict, CertificateRow.error).where(CertificateRow.job_id == job.id)
                           .order_by(CertificateRow.query_id)).all()
    assert [v for v, _ in rows] == ["verified", "unknown", "verified"]
    assert "SolverError: the LP solver gave up" in rows[1][1]
