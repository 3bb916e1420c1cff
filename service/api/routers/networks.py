"""Networks: register a built-in one, upload a file, list, look up."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile, status

from polycert import batches
from polycert.api.deps import NetworkId, SessionDep, SettingsDep, TokenDep
from polycert import datasets, reports
from polycert.api.schemas import (
    ForwardInput, ForwardPass, NetworkBuiltin, NetworkList, NetworkPublic, NetworkRegistered, NetworkWeights,
    PruneRequest, QuantizeRequest,
)
from polycert.db import repositories as repo

router = APIRouter(prefix="/networks", tags=["networks"])


def network_public(session, row) -> NetworkPublic:
    out = NetworkPublic.model_validate(row)
    out.aliases = repo.network_aliases(session, [row.id]).get(row.id, [])
    return out


def _registered(session, row, created: bool) -> NetworkRegistered:
    return NetworkRegistered(**network_public(session, row).model_dump(), created=created)


@router.post("", response_model=NetworkRegistered, status_code=status.HTTP_201_CREATED)
def register_builtin(body: NetworkBuiltin, session: SessionDep, _user: TokenDep) -> NetworkRegistered:
    """Register a shipped network (``polycert-tiny``, ``verianet``) by name."""
    row, created = batches.register_builtin(session, body.builtin)
    session.commit()
    return _registered(session, row, created)


@router.post("/upload", response_model=NetworkRegistered, status_code=status.HTTP_201_CREATED)
def upload(
    session: SessionDep,
    settings: SettingsDep,
    _user: TokenDep,
    file: Annotated[UploadFile, File(description=".npz, .pt (state dict) or .onnx")],
    name: Annotated[str | None, Form()] = None,
    activations: Annotated[str | None, Form(description="comma-separated, for .npz/.pt (e.g. gelu,gelu,identity)")] = None,
    orientation: Annotated[str | None, Form(description="out_in (W @ x) or in_out (x @ W), for .npz")] = None,
    domain: Annotated[str | None, Form(description="the inputs' box: LO,HI (e.g. -1,1 or 0,255 or -inf,inf) or JSON "
                                                   "[lower, upper] (numbers, per-coordinate lists, null = infinite); "
                                                   "default: what the file says, else unbounded")] = None,
) -> NetworkRegistered:
    """Upload a network file. Limits (settings ``POLYCERT_UPLOAD_MAX_*``): the file's bytes and what its zip
    decompresses into (413), its parameters, layers and width, read from the headers first (422). A plain
    ``def``: FastAPI runs it in a worker thread, so parsing a large file never blocks the event loop."""
    limits = settings.upload_limits
    data = file.file.read(limits.max_bytes + 1)
    options = {"name": name}
    if activations:
        options["activations"] = [a.strip() for a in activations.split(",")]
    if orientation:
        options["orientation"] = orientation
    if domain:
        options["domain"] = domain  # read (and refused with a message) by formulations.domains.parse_domain
    row, created = batches.register_upload(session, file.filename or "upload", data, limits=limits, **options)
    session.commit()
    return _registered(session, row, created)


@router.get("", response_model=NetworkList)
def list_networks(session: SessionDep) -> NetworkList:
    rows = repo.list_networks(session)
    aliases = repo.network_aliases(session, [r.id for r in rows])
    data = [NetworkPublic.model_validate(r).model_copy(update={"aliases": aliases.get(r.id, [])}) for r in rows]
    return NetworkList(count=len(rows), data=data)


def _row_or_404(session, network_id: int):
    row = repo.get_network(session, network_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no network with id {network_id}")
    return row


@router.get("/{network_id}", response_model=NetworkPublic)
def get_network(network_id: NetworkId, session: SessionDep) -> NetworkPublic:
    return network_public(session, _row_or_404(session, network_id))


@router.get("/{network_id}/weights", response_model=NetworkWeights)
def weights(network_id: NetworkId, session: SessionDep) -> NetworkWeights:
    """Every layer's weight matrix (n_out x n_in), bias and activation, as stored."""
    return NetworkWeights(**reports.network_layers(_row_or_404(session, network_id)))


@router.get("/{network_id}/forward", response_model=ForwardPass)
def forward_sample(
    network_id: NetworkId, session: SessionDep,
    dataset: Annotated[str, Query(description="a shipped data set (GET /datasets)")],
    index: Annotated[int, Query(ge=0, description="the image's index in the set")],
    split: Literal["train", "test"] = "test",
) -> ForwardPass:
    """The server's forward pass on one image of a shipped data set: pre-activations, activations, logits."""
    row = _row_or_404(session, network_id)
    x, label, _ = datasets.sample(dataset, index, split)
    return ForwardPass(**reports.forward(row, x), dataset=dataset, split=split, index=index, label=label)


@router.post("/{network_id}/forward", response_model=ForwardPass)
def forward_input(network_id: NetworkId, body: ForwardInput, session: SessionDep) -> ForwardPass:
    """The server's forward pass on an input of your own (e.g. a certificate's counterexample); reads only."""
    return ForwardPass(**reports.forward(_row_or_404(session, network_id), body.input))


@router.post("/{network_id}/prune", response_model=NetworkRegistered, status_code=status.HTTP_201_CREATED)
def prune(network_id: NetworkId, body: PruneRequest, session: SessionDep, _user: TokenDep) -> NetworkRegistered:
    """Register a magnitude-pruned copy (``percent`` of the smallest weights set to zero; issue 5 item 6)."""
    row, created = batches.derive_network(session, network_id, "prune", fraction=body.percent / 100.0,
                                          scope=body.scope, name=body.name)
    session.commit()
    return _registered(session, row, created)


@router.post("/{network_id}/quantize", response_model=NetworkRegistered, status_code=status.HTTP_201_CREATED)
def quantize(network_id: NetworkId, body: QuantizeRequest, session: SessionDep, _user: TokenDep) -> NetworkRegistered:
    """Register a copy with weights quantised to ``bits`` bits (symmetric, one scale per layer)."""
    row, created = batches.derive_network(session, network_id, "quantize", bits=body.bits, name=body.name)
    session.commit()
    return _registered(session, row, created)
