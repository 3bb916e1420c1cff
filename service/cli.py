"""``polycert``: the command line (typer).

Without ``--url`` every command works on the configured database in this process (the embedded default:
SQLite and an in-process worker); with ``--url`` (or ``POLYCERT_URL``) and ``--token`` (``POLYCERT_TOKEN``)
the client commands (submit, status, cancel, results, compare, signatures, signature-job, networks, invert,
prune, quantize, vnncomp-batch, demo) go through the HTTP API instead. Both ways they get the API's JSON
(:class:`polycert.client.Client` or :class:`polycert.local.Local`), so they print the same thing.

Exit codes: 0 success; 1 a job ended with engine errors or was cancelled; 2 configuration or database
not ready (e.g. not migrated), or the server refused the token; 3 not found; 4 bad input; 5 the queue or
the server is unreachable (or the server failed).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from polycert.client import ApiError
from polycert.formulations.errors import PolyCertError
from polycert.db.migrate import DatabaseNotMigratedError

# piped or captured output (CI logs, `| tee`) gets rich's default of 80 columns, which cut the tables' headers
console = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True)

EXIT_JOB_FAILED, EXIT_CONFIG, EXIT_NOT_FOUND, EXIT_BAD_INPUT, EXIT_QUEUE = 1, 2, 3, 4, 5


def fail(message: str, code: int) -> "typer.Exit":
    # one line whatever the width; the message escaped: "[0, 1]" or a path with brackets is not markup
    err.print(f"[bold red]polycert: error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def api_exit(exc: ApiError) -> "typer.Exit":
    """An API refusal (from the server, or from :mod:`polycert.local` in this process) as one line and its exit code."""
    status = exc.status_code
    if status in (401, 403):
        return fail("the server refused the token (set --token or POLYCERT_TOKEN)", EXIT_CONFIG)
    if status == 404:
        return fail(exc.message, EXIT_NOT_FOUND)
    if 400 <= status < 500:  # 422 and 413 (and 409: a job that already ended, a name taken) are the input's
        return fail(exc.message, EXIT_BAD_INPUT)
    if status == 0 or status == 503:
        return fail(exc.message, EXIT_QUEUE)
    return fail(f"the server failed (HTTP {status}): {exc.message}", EXIT_QUEUE)


class _Commands(TyperGroup):
    """Every command's ApiError becomes its exit code and one line, never a traceback."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            raise api_exit(exc) from None


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True,
                  help="PolyCert: exact verification of feed-forward networks.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema (Alembic migrations).")
app.add_typer(db_app, name="db")
networks_app = typer.Typer(no_args_is_help=True, help="Registered networks: upload a file, list them, show one.")
app.add_typer(networks_app, name="networks")


@dataclass
class Remote:
    """Where the client commands go: ``url`` None is this process (the configured database)."""
    url: str | None = None
    token: str | None = None
    from_command_line: bool = False


REMOTE = Remote()


def _print_version(value: bool) -> None:
    if value:
        from polycert.version import polycert_version

        print(f"polycert {polycert_version()}")
        raise typer.Exit(0)


@app.callback()
def _main(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")] = False,
    url: Annotated[Optional[str], typer.Option("--url", envvar="POLYCERT_URL", show_envvar=True,
                                               help="a PolyCert server (http://host:port): the client commands go "
                                                    "through its HTTP API instead of the local database")] = None,
    token: Annotated[Optional[str], typer.Option("--token", envvar="POLYCERT_TOKEN", show_envvar=True,
                                                 help="the server's write token (its POLYCERT_API_TOKEN)")] = None,
) -> None:
    """PolyCert: exact verification of feed-forward networks."""
    # set on every invocation: tests run several in one process
    REMOTE.url, REMOTE.token = (url or None), (token or None)
    # by name: typer carries its own copy of click, whose ParameterSource is not click's
    source = ctx.get_parameter_source("url")
    REMOTE.from_command_line = source is not None and source.name == "COMMANDLINE"


def _local_only(command: str) -> None:
    """Commands that are the server side (or need this machine's database) run here: an explicit ``--url``
    is refused rather than ignored; POLYCERT_URL in the environment is for the client commands only."""
    if REMOTE.url and REMOTE.from_command_line:
        raise fail(f"{command} runs on this machine and does not take --url", EXIT_BAD_INPUT)


def _settings():
    from polycert.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        raise fail("invalid settings: " + "; ".join(e["msg"] for e in exc.errors()), EXIT_CONFIG) from None


def _engine(*, migrate: bool = False):
    """The configured database; checked to be migrated (or migrated, for the embedded default)."""
    from polycert.db.migrate import ensure_migrated, upgrade
    from polycert.db.session import get_engine

    settings = _settings()
    if migrate:
        upgrade(settings.resolved_database_url)
    engine = get_engine(settings.resolved_database_url)
    try:
        ensure_migrated(engine)
    except DatabaseNotMigratedError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    return engine


def _backend():
    """The API the client commands talk to: the server of ``--url``, else this process on the configured
    database. The embedded default (no database configured) is brought up to date first, so that any command
    works in a new data directory; a configured database must have been migrated (``polycert db upgrade``)."""
    if REMOTE.url:
        from polycert.client import Client

        return Client(REMOTE.url, token=REMOTE.token)
    from polycert.local import Local

    return Local(_engine(migrate=_settings().database_url is None), _settings())


def _runs_here(backend) -> bool:
    """Jobs run in this process (the embedded default without --url): the command must stay to drain them."""
    from polycert.local import Local

    return isinstance(backend, Local) and backend.settings.embedded


# -- db -------------------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations to the configured database (POLYCERT_DATABASE_URL, default SQLite)."""
    from polycert.db.migrate import upgrade

    _local_only("db upgrade")
    settings = _settings()
    try:
        upgrade(settings.resolved_database_url, revision)
    except Exception as exc:  # unreachable server, permissions: say so, no traceback
        raise fail(f"cannot upgrade {settings.resolved_database_url.split('@')[-1]}: {exc}", EXIT_CONFIG) from None
    console.print(f"database at revision {revision}: {settings.resolved_database_url.split('@')[-1]}")


@db_app.command("check")
def db_check() -> None:
    """Exit 0 if the database is at the latest migration, 2 (with the reason) otherwise."""
    _local_only("db check")
    _engine()
    console.print("database is up to date")


# -- servers --------------------------------------------------------------------------------------------
@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the HTTP API (uvicorn). Refuses to start on an unmigrated database."""
    import uvicorn

    from polycert.api.app import create_app

    _local_only("serve")
    settings = _settings()
    try:
        api = create_app()
    except DatabaseNotMigratedError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    for line in serve_banner(settings, host, port):
        console.print(line, highlight=False, soft_wrap=True)
    uvicorn.run(api, host=host, port=port)


def serve_banner(settings, host: str, port: int) -> list[str]:
    """What ``serve`` says before it starts: where the data is and, on the development token, the token
    itself with how to use it (a newcomer's first write otherwise gets a 401 and no hint)."""
    from polycert.settings import DEVELOPMENT_TOKEN

    url = f"http://{host}:{port}"
    where = (f"embedded default: {settings.resolved_database_url}, in-process worker" if settings.embedded
             else f"database {settings.resolved_database_url.split('@')[-1]}, queue {settings.queue_name}")
    lines = [f"PolyCert API on {url} ({where}); documentation at {url}/docs"]
    if settings.api_token == DEVELOPMENT_TOKEN:
        lines += [f"write token (development): {DEVELOPMENT_TOKEN}",
                  f"  send it as a header: curl -H 'Authorization: Bearer {DEVELOPMENT_TOKEN}'"
                  f" -H 'Content-Type: application/json' -d '{{\"builtin\": \"polycert-tiny\"}}' {url}/networks",
                  "  set POLYCERT_API_TOKEN to a secret of your own before anyone else can reach this port"]
    else:
        lines.append("write endpoints need the token of POLYCERT_API_TOKEN (Authorization: Bearer ...)")
    return lines


@app.command()
def worker(concurrency: Annotated[int, typer.Option("--concurrency", "-c")] = 1, loglevel: str = "info") -> None:
    """Run a Celery worker on POLYCERT_BROKER_URL (prefork, one chunk per process at a time)."""
    _local_only("worker")
    settings = _settings()
    if settings.embedded:
        raise fail("POLYCERT_BROKER_URL is not set: with no broker, jobs run in the embedded worker of the"
                   " process that submits them (polycert submit / serve)", EXIT_CONFIG)
    _engine()
    from polycert.workers.app import app as celery_app

    celery_app.worker_main(["worker", f"--concurrency={concurrency}", f"--loglevel={loglevel}",
                            "-Q", settings.queue_name, "--without-gossip", "--without-mingle"])


# -- networks -------------------------------------------------------------------------------------------
def describe_domain(domain: dict) -> str:
    """A network's input domain (``DomainPublic``) in words: ``[0, 1]``, ``unbounded``, a per-coordinate box."""
    from polycert.formulations.domains import parse_domain

    return parse_domain(domain).describe()


def layers_of(architecture: str) -> tuple[list[str], list[str]]:
    """``"49-3-3-10 gelu,gelu,identity"`` (``Network.architecture``) as its sizes and its activations."""
    sizes, _, activations = architecture.partition(" ")
    return sizes.split("-"), [a for a in activations.split(",") if a]


def print_network(net: dict) -> None:
    """One network (``NetworkPublic``): layers with their activations, input domain, aliases."""
    sizes, activations = layers_of(net["architecture"])
    layers = " -> ".join([sizes[0], *(f"{n} {a}" for n, a in zip(sizes[1:], activations))]) if sizes else "-"
    created = "" if "created" not in net else ("registered" if net["created"] else "already registered") + "; "
    lines = [f"network {net['id']}: {net['name']} ({created}{net['source_format']})",
             f"  layers: {layers}",
             f"  activations: {', '.join(activations) or '-'}",
             f"  inputs {net['input_size']}, outputs {net['output_size']}; input domain {describe_domain(net['input_domain'])}",
             f"  aliases: {', '.join(net.get('aliases') or []) or 'none'}",
             f"  digest {net['digest']}, registered {net['created_at']}"]
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@networks_app.command("upload")
def networks_upload(
    file: Annotated[Path, typer.Argument(help=".npz, .pt (state dict) or .onnx")],
    name: Annotated[Optional[str], typer.Option(help="default: the file's name without its suffix")] = None,
    domain: Annotated[Optional[str], typer.Option(help="the inputs' box LO,HI (e.g. 0,1 or -inf,inf); default: what "
                                                       "the file says, else unbounded")] = None,
    activations: Annotated[Optional[str], typer.Option(help="comma-separated, for .npz / .pt (e.g. gelu,gelu,identity)")] = None,
    orientation: Annotated[Optional[str], typer.Option(help="out_in (W @ x) or in_out (x @ W), for .npz")] = None,
) -> None:
    """Register a network file (the same checks and limits as POST /networks/upload)."""
    if not file.is_file():
        raise fail(f"cannot read {file}: no such file", EXIT_NOT_FOUND)
    print_network(_backend().upload_network(file, name=name, domain=domain, activations=activations,
                                                        orientation=orientation))


@networks_app.command("list")
def networks_list() -> None:
    """The registered networks: id, name, layers, input domain, aliases."""
    rows = _backend().networks()
    table = Table(title=f"networks ({len(rows)})", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("id", "name", "architecture", "format", "input domain", "aliases"):
        table.add_column(col, justify="right" if col == "id" else "left")
    for net in rows:
        table.add_row(str(net["id"]), escape(net["name"]), escape(net["architecture"]), net["source_format"],
                      escape(describe_domain(net["input_domain"])), escape(", ".join(net.get("aliases") or [])) or "-")
    console.print(table)


@networks_app.command("show")
def networks_show(network: Annotated[str, typer.Argument(help="id, name or alias")]) -> None:
    """One registered network: layers, activations, input domain, aliases."""
    print_network(_backend().network(network))


# -- jobs -----------------------------------------------------------------------------------------------
FINISHED = ("done", "cancelled", "failed")


def _follow(backend, job_id: int, total: int) -> str:
    """A progress bar until the job is done or cancelled; returns its final status."""
    columns = (TextColumn("job {task.fields[job]}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task("certify", total=total, job=job_id, status="queued")
        while True:
            job = backend.job(job_id)
            bar.update(task, completed=job["progress"]["done"], status=job["status"])
            if job["status"] in FINISHED:
                return job["status"]
            time.sleep(0.3)


def _wait_embedded(backend, job_id: int, total: int) -> str:
    """Embedded mode: the pool lives in this process, so follow the job until the pool is drained."""
    import threading

    from polycert.dispatch import get_dispatcher

    pool = get_dispatcher(backend.settings)
    failure: list[BaseException] = []

    def drain() -> None:
        try:
            pool.wait()
        except BaseException as exc:  # surfaced below, after the bar stops
            failure.append(exc)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    status = _follow(backend, job_id, total)
    thread.join()
    if failure:
        raise fail(f"the embedded worker failed: {failure[0]}", EXIT_JOB_FAILED)
    return status


def _run(backend, request, wait: bool) -> int:
    """Submit a validated request; follow it when asked (always when it runs in this process)."""
    job = backend.submit(_body(request))
    job_id, total = job["id"], job["progress"]["total"]
    console.print(f"job {job_id}: {total} queries submitted")
    if _runs_here(backend):
        status = _wait_embedded(backend, job_id, total)
    elif wait:
        status = _follow(backend, job_id, total)
    else:
        return job_id
    console.print(f"job {job_id}: {status}")
    return job_id


def _request(model=None, **fields):
    """The request checked here first, by the model the API checks it with: a mistake is a one-line
    error naming the field before anything is sent."""
    from polycert.batches import BatchRequest

    try:
        return (model or BatchRequest)(**fields)
    except ValidationError as exc:
        raise fail("; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in exc.errors()), EXIT_BAD_INPUT) from None


def _body(request) -> dict:
    """A validated request as the JSON body of ``POST /jobs`` (unset fields left to the server's defaults)."""
    return request.model_dump(mode="json", exclude_none=True)


def _domain_pair(text: str | None):
    """``--domain LO,HI`` as the request's (lower, upper), null for an open side; a malformed one is a one-line error."""
    if text is None:
        return None
    from polycert.formulations.domains import parse_domain

    try:
        data = parse_domain(text).to_json()
    except PolyCertError as exc:
        raise fail(f"--domain: {exc}", EXIT_BAD_INPUT) from None
    return data["lower"], data["upper"]


def _network_field(key: str, prefix: str = "") -> dict:
    """A network named on the command line, as a request's ``network_id`` (digits) or ``network`` (a
    registered name, an alias or a built-in name, which the server registers on first use)."""
    key = key.strip()
    return {f"{prefix}network_id": int(key)} if key.isdigit() else {f"{prefix}network": key}


@app.command()
def submit(
    network: Annotated[str, typer.Option(help="a registered or built-in network name")] = "polycert-tiny",
    dataset: Annotated[str, typer.Option(help="mnist7-area, mnist7-bilinear or mnist28")] = "mnist7-area",
    start: int = 0,
    stop: int = 100,
    eps: Annotated[list[float], typer.Option(help="radius; repeat for several")] = [0.01],
    methods: Annotated[str, typer.Option(help="lp, klp, mip, both (lp + mip) or all (lp + klp + mip); "
                                                "or a comma-separated list")] = "both",
    solver: Optional[str] = None,
    time_limit: Optional[float] = None,
    domain: Annotated[Optional[str], typer.Option(help="narrow the network's input domain to LO,HI (e.g. 0,0.5)")] = None,
    wait: Annotated[bool, typer.Option(help="follow the job with a progress bar (always, when embedded)")] = True,
) -> None:
    """Submit a batch of robustness queries over a dataset slice."""
    chosen = [m.strip() for m in methods.split(",")] if "," in methods else methods  # "lp,klp": a list
    request = _request(network=network, dataset=dict(name=dataset, start=start, stop=stop), eps=eps,
                       methods=chosen, solver=solver, time_limit=time_limit, domain=_domain_pair(domain))
    job_id = _run(_backend(), request, wait)
    console.print(f"job id: {job_id}")


def print_status(job: dict) -> None:
    """A job (``GET /jobs/{id}``): status, answered of total, engine errors, verdict counts per method."""
    p = job["progress"]
    console.print(f"job {job['id']}: {job['status']}, {p['done']}/{p['total']} answered, {p['errors']} engine errors")
    for method, verdicts in sorted(p["verdicts"].items()):
        console.print(f"  {method}: " + ", ".join(f"{v} {n}" for v, n in sorted(verdicts.items())))
    if job.get("error"):
        console.print(f"  error: {job['error']}", highlight=False, markup=False)


@app.command()
def status(job: int) -> None:
    """A job's status and progress."""
    print_status(_backend().job(job))


@app.command()
def jobs(last: Annotated[int, typer.Option("--last", min=1, help="show the newest N jobs")] = 20) -> None:
    """The jobs, newest last: id, kind, network, status, answered of total, when submitted."""
    rows = _backend().jobs()
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("job", "kind", "network", "status", "answered", "errors", "submitted (UTC)"):
        table.add_column(column, justify="right" if column in ("job", "network", "answered", "errors") else "left")
    for job in sorted(rows, key=lambda j: j["id"])[-last:]:
        p = job.get("progress") or {}
        table.add_row(str(job["id"]), job["kind"], str(job["network_id"]), job["status"],
                      f"{p.get('done', 0)}/{p.get('total', 0)}", str(p.get("errors", 0)),
                      job["created_at"].replace("T", " ")[:19])
    console.print(table)
    console.print(f"{len(rows)} jobs" + (f", the newest {last} shown" if len(rows) > last else ""), highlight=False)


@app.command()
def cancel(job: int) -> None:
    """Cancel a queued or running job (answers already stored are kept)."""
    console.print(_backend().cancel(job), highlight=False)


@app.command()
def requeue(job: int) -> None:
    """Send a job's unfinished chunks to the queue again, e.g. after the broker lost its messages (a Redis
    restarted without persistence): the job goes on where it stood; answers already stored are kept once."""
    console.print(_backend().requeue(job), highlight=False)


#: ``polycert results --format csv``: one row per certificate, the columns a reader of a job's answers wants
#: first (the full certificate, with counterexamples, timings and tight constraints, is --format json)
RESULT_COLUMNS = (("item", "item"), ("source_index", "source_index"), ("label", "label"), ("target", "target"),
                  ("eps", "eps"), ("norm", "norm"), ("method", "method"), ("verdict", "verdict"), ("answer", "answer"),
                  ("lower", "lower"), ("upper", "upper"), ("gap", "gap"), ("reason", "reason"), ("stage", "stage"),
                  ("solver", "solver"), ("seconds", "wall_time"), ("error", "error"), ("certificate_id", "id"))


def results_csv(certificates: list[dict], out) -> None:
    """The certificates as CSV on ``out``: a header, then a row each; an empty cell is no value (an
    infinite bound, a reason a decided query does not have)."""
    import csv

    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([name for name, _ in RESULT_COLUMNS])
    for cert in certificates:
        writer.writerow(["" if cert.get(key) is None else cert[key] for _, key in RESULT_COLUMNS])


def write_results_file(certificates: list[dict], fmt: str, out) -> None:
    import json

    if fmt == "csv":
        results_csv(certificates, out)
    else:
        out.write(json.dumps(certificates, indent=1) + "\n")


@app.command()
def results(
    job: int,
    fmt: Annotated[str, typer.Option("--format", help="csv (one row per certificate) or json (the API's certificates)")] = "csv",
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="write to this file instead of stdout")] = None,
) -> None:
    """Export a job's certificates (all of them, in query order) as CSV or JSON."""
    if fmt not in ("csv", "json"):
        raise fail(f"--format must be csv or json, got {fmt!r}", EXIT_BAD_INPUT)
    if output is not None:
        check_writable(output)
    certificates = _backend().results(job)
    if output is None:
        write_results_file(certificates, fmt, sys.stdout)
        return
    try:
        with open(output, "w", newline="") as fh:
            write_results_file(certificates, fmt, fh)
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror or exc}", EXIT_BAD_INPUT) from None
    err.print(f"{len(certificates)} certificates of job {job} written to {output}", highlight=False)


def compact(value: float | None) -> str:
    """A number in at most three significant digits ("-" where there is none)."""
    return "-" if value is None else f"{value + 0.0:.3g}"  # + 0.0: a negative zero prints as 0


COMPARISON_GROUPS = {"eps": ("by_eps", "eps"), "digit": ("by_digit", "digit")}
COMPARISON_LEGEND = (
    "pairs = (input, eps) pairs; miscl. = the input itself is misclassified (counted apart, not as falsified); "
    "LP ver. = LP relaxation proves robustness; MIP ver. = exact MIP proves robustness; "
    "MIP only = exact MIP proves what the LP cannot; falsified = a counterexample exists; unknown = neither decided; "
    "conflicts = LP and MIP contradict each other; gap = exact lower bound minus LP bound (median / 90% / max); "
    "neg. gaps = exact lower bound below the LP bound beyond the tolerance")
KLP_LEGEND = ("k-LP ver. = the k-neuron LP relaxation proves robustness; k-LP > LP = it proves what the "
              "single-neuron LP cannot; MIP > k-LP = the exact MIP proves what the k-LP cannot; k-LP gap = exact lower "
              "bound minus k-LP bound (median / 90% / max)")
ROWS_LEGEND = (
    "LP bound = the LP relaxation's lower bound on the minimum margin (robust where it is > 0); "
    "MIP bracket = the exact minimum margin lies in [lower, upper]; gap = MIP lower minus LP bound; "
    "miscl. = the input itself is misclassified; NEG. GAP = MIP lower below the LP bound beyond the tolerance")


def print_comparison(summary: dict, by: str = "eps") -> None:
    """The summary table, one line per eps (or per digit) and one for all, with its legend underneath."""
    key, label = COMPARISON_GROUPS[by]
    # no vertical rules, and the gap column kept on one line: the table fits the 120 columns of piped output
    table = Table(title="LP versus MIP (robustness certificates)", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in (label, "pairs", "miscl.", "LP ver.", "MIP ver.", "MIP only", "falsified", "unknown", "conflicts"):
        table.add_column(col, justify="right")
    table.add_column("gap med / 90% / max", justify="right", no_wrap=True)
    table.add_column("neg. gaps", justify="right")
    for r in [*summary[key], {label: "all", **summary["total"]}]:
        gap = " / ".join(compact(r[k]) for k in ("gap_median", "gap_p90", "gap_max"))
        table.add_row(str(r[label]), *(str(r[k]) for k in ("pairs", "misclassified", "lp_verified", "mip_verified",
                                                          "mip_only_verified", "falsified", "unknown", "conflicts")),
                      gap, str(r["negative_gaps"]))
    console.print(table)
    console.print(COMPARISON_LEGEND, soft_wrap=True, highlight=False, markup=False)
    total = summary["total"]
    if total.get("klp_pairs"):  # the job asked for the k-neuron LP too: LP / k-LP / MIP
        klp = Table(title="k-neuron LP between them", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for col in (label, "pairs", "LP ver.", "k-LP ver.", "MIP ver.", "k-LP > LP", "MIP > k-LP"):
            klp.add_column(col, justify="right")
        klp.add_column("k-LP gap med / 90% / max", justify="right", no_wrap=True)
        for r in [*summary[key], {label: "all", **total}]:
            gap = " / ".join(compact(r[k]) for k in ("klp_gap_median", "klp_gap_p90", "klp_gap_max"))
            klp.add_row(str(r[label]), *(str(r[k]) for k in ("klp_pairs", "lp_verified", "klp_verified", "mip_verified",
                                                              "klp_over_lp", "mip_over_klp")), gap)
        console.print(klp)
        console.print(KLP_LEGEND, soft_wrap=True, highlight=False, markup=False)
    if total["pending"]:
        console.print(f"{total['pending']} of {total['pairs']} pairs are still waiting for an answer", highlight=False)
    if total["conflicts"]:
        err.print("[bold red]LP and MIP contradict each other on some queries: a soundness problem, please report it[/]")
    if total["negative_gaps"]:
        err.print("[bold red]the exact lower bound lies below the LP bound on some queries: a soundness problem, "
                  "please report it[/]")


def print_comparison_rows(rows: list[dict]) -> None:
    """The per-query rows of a comparison (``ComparisonRowPublic``), with their legend."""
    table = Table(title="LP versus MIP per query", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    with_klp = any(r.get("klp_verdict") for r in rows)
    klp_cols = ("k-LP bound", "k-LP") if with_klp else ()
    for col in ("item", "source", "digit", "eps", "LP bound", "LP", *klp_cols, "MIP bracket", "MIP", "gap", "agreement", "note"):
        table.add_column(col, justify="right", no_wrap=col == "MIP bracket")
    for r in rows:
        note = " ".join(word for word, on in (("miscl.", r["misclassified"]), ("NEG. GAP", r["negative_gap"])) if on)
        klp = (compact(r.get("klp_lower")), r.get("klp_verdict") or "-") if with_klp else ()
        table.add_row(str(r["item"]), "-" if r["source_index"] is None else str(r["source_index"]), str(r["label"]),
                      compact(r["eps"]), compact(r["lp_lower"]), r["lp_verdict"] or "-", *klp,
                      escape(f"[{compact(r['mip_lower'])}, {compact(r['mip_upper'])}]"), r["mip_verdict"] or "-",
                      compact(r["relaxation_gap"]), r["agreement"], note)
    console.print(table)
    console.print(ROWS_LEGEND, soft_wrap=True, highlight=False, markup=False)


@app.command()
def compare(
    job: int,
    by: Annotated[str, typer.Option(help="group the summary by eps or by digit (the true label)")] = "eps",
    rows: Annotated[bool, typer.Option("--rows", help="also print the per-query rows")] = False,
    differ: Annotated[bool, typer.Option("--differ", help="print only the rows whose verdicts differ (implies --rows)")] = False,
) -> None:
    """The LP-versus-MIP comparison of a job run with methods=both: summary per eps or digit, rows on request."""
    if by not in COMPARISON_GROUPS:
        raise fail(f"--by must be one of {', '.join(COMPARISON_GROUPS)}, got {by!r}", EXIT_BAD_INPUT)
    result = _backend().comparison(job, differ=True if differ else None, rows=rows or differ)
    print_comparison(result["summary"], by)
    if rows or differ:
        print_comparison_rows(result["rows"])


SHADES = " .:-=+*#%@"


def _shade(share: float) -> str:
    return SHADES[min(len(SHADES) - 1, int(share * (len(SHADES) - 0.001)))]


def heatmap(shares: list[float], side: int | None) -> list[str]:
    """One text row per image row (two characters per pixel, ' ' = 0 ... '@' = 1), or one row."""
    cells = [_shade(f) * 2 for f in shares]
    if not side:
        return ["".join(cells)]
    return ["".join(cells[r * side:(r + 1) * side]) for r in range(side)]


def region_table(result: dict) -> Table:
    """Per hidden neuron: the share of certificates with its pre-activation in each region."""
    table = Table(title="region of the pre-activation at the optimum (share of certificates)")
    for col in ("layer", "neuron", "regions"):
        table.add_column(col, justify="right" if col != "regions" else "left")
    shares: dict[tuple[int, int], dict[int, float]] = {}
    for row in result["neurons"]:
        if row["kind"] == "region":
            shares.setdefault((row["layer"], row["neuron"]), {})[row["index"]] = row["share"]
    for (layer, neuron), by_region in sorted(shares.items()):
        names = result["region_names"][layer] if layer < len(result["region_names"]) else []
        text = "  ".join(f"{names[r] if r < len(names) else r} {by_region.get(r, 0.0):.2f}"
                         for r in range(max(len(names), max(by_region) + 1)))
        table.add_row(str(layer), str(neuron), text)
    return table


@app.command()
def signatures(
    digit: Annotated[int, typer.Option(help="the true class of the queries (0..classes-1)")],
    network: Annotated[Optional[str], typer.Option(help="network id or name (needed when several have certificates)")] = None,
    job: Optional[int] = None,
    method: Annotated[Optional[str], typer.Option(help="lp or mip")] = None,
    eps: Optional[float] = None,
    source: Annotated[Optional[str], typer.Option(help="signature (signature jobs) or robustness (robustness optima); default both")] = None,
) -> None:
    """Per-digit signatures of one network: n, text heatmaps of how often each pixel sits at its lower /
    upper bound at the optimum, the region shares of every hidden neuron, and envelope / segment activity."""
    if method is not None and method not in ("lp", "mip"):
        raise fail(f"--method must be lp or mip, got {method!r}", EXIT_BAD_INPUT)
    if eps is not None and not (math.isfinite(eps) and eps >= 0):
        raise fail(f"--eps must be a finite number >= 0, got {eps}", EXIT_BAD_INPUT)
    result = _backend().signatures(digit=digit, network=network, job=job, method=method, eps=eps, source=source)
    print_signatures(result)


def print_signatures(result: dict) -> None:
    """``GET /signatures``' answer: n, the pixel heatmaps, region shares, envelope / segment activity."""
    digit = result["digit"]
    name = "no network" if result["network"] is None else f"network {result['network']['id']} ({result['network']['name']})"
    console.print(f"digit {digit}, {name}, source {result['source']}: n = {result['n']} certificates", highlight=False)
    if result["n"] == 0:
        return
    for label, shares in (("lower", result["pixel_lower"]), ("upper", result["pixel_upper"])):
        console.print(f"pixels at their {label} bound (share of certificates; ' ' 0 ... '@' 1):", highlight=False)
        for line in heatmap(shares, result["image_side"]):
            console.print("  |" + line + "|", highlight=False)
    console.print(region_table(result))
    table = Table(title="envelope lines / segments (share of certificates)")
    for col in ("layer", "neuron", "kind", "index", "count", "share"):
        table.add_column(col, justify="right")
    for a in [r for r in result["neurons"] if r["kind"] != "region"][:60]:
        table.add_row(*(str(a[k]) for k in ("layer", "neuron", "kind", "index", "count")), f"{a['share']:.2f}")
    console.print(table)


@app.command("signature-job")
def signature_job(
    network: Annotated[str, typer.Option(help="a registered or built-in network name")] = "polycert-tiny",
    dataset: Annotated[str, typer.Option(help="mnist7-area, mnist7-bilinear or mnist28")] = "mnist7-area",
    start: int = 0,
    stop: int = 10,
    eps: Annotated[list[float], typer.Option(help="radius; repeat for several")] = [0.05],
    methods: Annotated[str, typer.Option(help="lp, mip or both")] = "both",
    target_class: Annotated[Optional[int], typer.Option(help="the class to maximise (default: each input's label)")] = None,
    tolerance: Annotated[float, typer.Option(help="the MIP's bracket closes at this gap")] = 1e-4,
    solver: Annotated[Optional[str], typer.Option(help="MIP back-end")] = None,
    lp_solver: Optional[str] = None,
    time_limit: Annotated[Optional[float], typer.Option(help="seconds per query")] = None,
    wait: Annotated[bool, typer.Option(help="follow the job (always, when embedded)")] = True,
) -> None:
    """Submit a signature job (POST /jobs kind "signature"): per test image and eps, maximise the class
    logit over the ball with LP and / or MIP and store the tight constraints; prints each answer (bound,
    achieved value, verdict), then `polycert signatures --digit D` shows them by digit."""
    from polycert.batches import SignatureRequest

    request = _request(SignatureRequest, kind="signature", network=network,
                       dataset=dict(name=dataset, start=start, stop=stop), eps=eps, methods=methods,
                       target_class=target_class, tolerance=tolerance, solver=solver, lp_solver=lp_solver,
                       time_limit=time_limit)
    backend = _backend()
    job_id = _run(backend, request, wait)
    if _runs_here(backend) or wait:
        print_signature_answers(backend.results(job_id), job_id)
    console.print(f"job id: {job_id}")


def print_signature_answers(certificates: list[dict], job_id: int) -> None:
    """A signature job's certificates: per query the class maximised, the achieved value and the bound."""
    table = Table(title=f"signatures (job {job_id}): max logit[class] over the ball")
    for col in ("item", "label", "class", "eps", "method", "verdict", "answer", "achieved", "bound", "gap", "s"):
        table.add_column(col, justify="right", no_wrap=True)
    for c in certificates:
        table.add_row(str(c["item"]), str(c["label"]), str((c["extra"] or {}).get("class", "-")), f"{c['eps']:g}",
                      c["method"], c["verdict"], c["answer"] or "-", _fmt(c["lower"], 7), _fmt(c["upper"], 7),
                      _fmt(c["gap"], 2), f"{c['wall_time']:.2f}")
    console.print(table)


@app.command("vnncomp")
def vnncomp(
    onnx: Annotated[str, typer.Argument(help="the network (ONNX)")],
    vnnlib: Annotated[str, typer.Argument(help="the property (VNN-LIB, plain or gzip)")],
    timeout: Annotated[float, typer.Option(help="seconds for the whole answer")] = 60.0,
    result: Annotated[Optional[str], typer.Option(help="write the VNN-COMP result file (sat + counterexample / unsat / unknown)")] = None,
) -> None:
    """Decide one VNN-COMP instance; print holds / violated / unknown (a violation is re-checked first)."""
    from pathlib import Path

    from polycert.formulations.loaders import load_onnx
    from polycert.formulations.vnncomp import vnncomp_answer
    from polycert.formulations.vnnlib import format_result, read_vnnlib

    if not (math.isfinite(timeout) and timeout > 0):
        raise fail(f"--timeout must be a positive number of seconds, got {timeout}", EXIT_BAD_INPUT)
    if result is not None:
        check_writable(result)
    started = time.monotonic()
    try:
        net = load_onnx(onnx)
        prop = read_vnnlib(vnnlib, n_inputs=net.input_size, n_outputs=net.output_size)
    except PolyCertError as exc:
        raise fail(str(exc), EXIT_BAD_INPUT) from None
    except Exception as exc:  # a file the loaders did not foresee (sizes its data do not fill): one line, no traceback
        raise fail(f"cannot read {onnx} / {vnnlib}: {type(exc).__name__}: {exc}", EXIT_BAD_INPUT) from None
    try:
        answer = vnncomp_answer(net, prop, timeout=max(timeout - (time.monotonic() - started), 1.0))
    except PolyCertError as exc:
        raise fail(str(exc), EXIT_BAD_INPUT) from None
    if result is not None:
        word = {"holds": "unsat", "violated": "sat"}.get(answer.word, "unknown")
        try:
            Path(result).write_text(format_result(word, answer.x, answer.y))
        except OSError as exc:
            raise fail(f"cannot write the result file {result}: {exc.strerror or exc}", EXIT_BAD_INPUT) from None
    print(answer.word)


def check_writable(path: str) -> None:
    """Refuse, before any work, a result path whose folder does not exist or cannot be written."""
    import os

    folder = Path(path).expanduser().parent
    if not folder.is_dir():
        raise fail(f"cannot write the result file {path}: {folder} is not a folder", EXIT_BAD_INPUT)
    if not os.access(folder, os.W_OK) or Path(path).is_dir():
        raise fail(f"cannot write the result file {path}: permission denied or a folder", EXIT_BAD_INPUT)


def _network_or_builtin(backend, key: str) -> dict:
    """A registered network by id, name or alias; a built-in name is registered on first use (as a job
    naming it would be)."""
    try:
        return backend.network(key)
    except ApiError as exc:
        if exc.status_code != 404 or key.strip().isdigit():
            raise
    try:
        return backend.register_builtin(key.strip())
    except ApiError as exc:
        if exc.status_code == 404:  # neither registered nor built in: say both
            raise ApiError(404, f"no registered network {key!r} and {exc.message}") from None
        raise


def _centres(center: list[str]) -> list[list[float]]:
    try:
        return [[float(v) for v in c.replace(",", " ").split()] for c in center]
    except ValueError:
        raise fail(f"a centre must be numbers separated by commas, got {center!r}", EXIT_BAD_INPUT) from None


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def print_answers(certificates: list[dict], title: str) -> None:
    """The answers of an invertibility job: verdict, answer word, bracket on p*, witness pair summary."""
    table = Table(title=title)
    for col in ("item", "verdict", "answer", "lower", "upper", "distance", "out diff", "s"):
        table.add_column(col, justify="right", no_wrap=True)
    for c in certificates:
        witness = (c["extra"] or {}).get("witness") or {}
        table.add_row(str(c["item"]), c["verdict"], c["answer"] or "-", _fmt(c["lower"]), _fmt(c["upper"]),
                      _fmt(witness.get("distance"), 3), _fmt(witness.get("output_difference"), 2), f"{c['wall_time']:.1f}")
    console.print(table)


@app.command()
def invert(
    kind: Annotated[str, typer.Argument(help="injectivity, preimage, dependence, invariance or radius")],
    network: Annotated[str, typer.Option(help="a registered network (id or name) or a built-in name")] = "polycert-tiny",
    second_network: Annotated[Optional[str], typer.Option(help="f2 of a dependence query (id or name)")] = None,
    center: Annotated[list[str], typer.Option(help="an explicit centre, comma-separated; repeat for several")] = [],
    dataset: Annotated[str, typer.Option(help="centres from mnist7-area, mnist7-bilinear or mnist28")] = "mnist7-area",
    start: int = 0,
    stop: int = 1,
    radius: Optional[float] = None,
    norm: str = "linf",
    delta: Annotated[Optional[float], typer.Option(help="output tolerance (needed for smooth activations)")] = None,
    domain: Annotated[Optional[str], typer.Option(help="input box LO,HI (default: all of R^d)")] = None,
    tolerance: float = 1e-4,
    solver: Optional[str] = None,
    time_limit: Annotated[Optional[float], typer.Option(help="seconds per query")] = None,
    wait: Annotated[bool, typer.Option(help="follow the job (always, when embedded)")] = True,
) -> None:
    """Invertibility queries (Cui et al. 2023) through the queue: one per centre; prints the bracket on p*,
    the verdict and answer (invertible / not invertible / unknown) and the witness pair's distance."""
    from polycert.batches import InvertibilityRequest

    fields = dict(kind=kind, **_network_field(network), radius=radius, norm=norm, delta=delta, tolerance=tolerance,
                  solver=solver, time_limit=time_limit)
    if second_network is not None:
        fields.update(_network_field(second_network, "second_"))
    if domain is not None:
        bounds = _centres([domain])[0]
        fields["domain"] = tuple(bounds)
    if center:
        fields["inputs"] = _centres(center)
    else:
        fields["dataset"] = dict(name=dataset, start=start, stop=stop)
    request = _request(InvertibilityRequest, **fields)
    backend = _backend()
    job_id = _run(backend, request, wait)
    if _runs_here(backend) or wait:
        print_answers(backend.results(job_id), f"{kind} (job {job_id})")
    console.print(f"job id: {job_id}")


def _derive(network: str, transform: str, **options) -> None:
    backend = _backend()
    source = _network_or_builtin(backend, network)
    derive = backend.prune if transform == "prune" else backend.quantize
    row = derive(source["id"], **options)
    console.print(f"network {row['id']}: {row['name']} ({row['architecture']}), "
                  f"{'registered' if row['created'] else 'already registered'}; derived from network {source['id']} "
                  f"({source['name']})", highlight=False)


@app.command()
def prune(
    network: Annotated[str, typer.Argument(help="a registered network (id or name) or a built-in name")],
    percent: Annotated[float, typer.Option(help="share of the smallest-magnitude weights set to zero")] = 50.0,
    scope: Annotated[str, typer.Option(help="layer (that share in every layer) or global")] = "layer",
    name: Optional[str] = None,
) -> None:
    """Register a magnitude-pruned copy of a network (for dependence queries against the original)."""
    if not 0 <= percent <= 100:
        raise fail(f"--percent must lie in [0, 100], got {percent}", EXIT_BAD_INPUT)
    _derive(network, "prune", percent=percent, scope=scope, name=name)


@app.command()
def quantize(
    network: Annotated[str, typer.Argument(help="a registered network (id or name) or a built-in name")],
    bits: int = 8,
    name: Optional[str] = None,
) -> None:
    """Register a copy of a network with weights quantised to BITS bits."""
    _derive(network, "quantize", bits=bits, name=name)


def read_instances(csv_path: str, timeout_scale: float) -> list[tuple[Path, Path, float]]:
    """A VNN-COMP ``instances.csv`` (``onnx,vnnlib,timeout`` per line, paths relative to the file).

    As the benchmarks ship them: a property named ``.vnnlib`` that exists only as ``.vnnlib.gz`` is read from
    that (:func:`resolve_gz`), and a first line whose timeout is not a number is a header and skipped."""
    import csv

    base = Path(csv_path).resolve().parent
    rows = []
    try:
        with open(csv_path, newline="") as fh:
            for line_no, row in enumerate(csv.reader(fh), 1):
                if not row or row[0].startswith("#"):
                    continue
                if len(row) < 3:
                    raise fail(f"{csv_path}:{line_no}: expected onnx,vnnlib,timeout; got {row}", EXIT_BAD_INPUT)
                try:
                    timeout = float(row[2])
                except ValueError:
                    if not rows and not _is_number_like(row[2]):  # a header (onnx,vnnlib,timeout) before any instance
                        continue
                    raise fail(f"{csv_path}:{line_no}: the timeout {row[2].strip()!r} is not a number", EXIT_BAD_INPUT) from None
                if not (math.isfinite(timeout) and timeout > 0):
                    raise fail(f"{csv_path}:{line_no}: the timeout must be a positive number of seconds, got {row[2].strip()}",
                               EXIT_BAD_INPUT)
                rows.append((base / row[0].strip(), resolve_gz(base / row[1].strip()), timeout * timeout_scale))
    except OSError as exc:
        raise fail(f"cannot read {csv_path}: {exc.strerror or exc}", EXIT_NOT_FOUND) from None
    if not rows:
        raise fail(f"{csv_path} lists no instances", EXIT_BAD_INPUT)
    return rows


def _is_number_like(text: str) -> bool:
    return any(c.isdigit() for c in text)


def resolve_gz(path: Path) -> Path:
    """``path``, or ``path.gz`` when only that exists (VNN-COMP lists ``prop.vnnlib`` and ships ``prop.vnnlib.gz``)."""
    gz = path.with_name(path.name + ".gz")
    return gz if not path.exists() and gz.exists() else path


def result_file_name(onnx: str, vnnlib: str) -> str:
    """``<network>_<property>.counterexample``: the instance's names without ``.onnx`` / ``.vnnlib[.gz]``."""
    def stem(name: str) -> str:
        for suffix in (".gz", ".onnx", ".vnnlib"):
            name = name.removesuffix(suffix)
        return name

    return f"{stem(Path(onnx).name)}_{stem(Path(vnnlib).name)}.counterexample"


def instance_names(job: dict, certificate: dict) -> tuple[str, str, float]:
    """(onnx name, property name, timeout) of a VNN-COMP certificate, from its job's ``instances``."""
    instances = job["parameters"].get("instances") or []
    spec = instances[certificate["item"]] if certificate["item"] < len(instances) else {}
    onnx_name, prop_name = (spec.get("name") or "network,property").split(",", 1)
    return onnx_name, prop_name, spec.get("timeout", math.nan)


def write_results(folder: Path, job: dict, certificates: list[dict]) -> list[Path]:
    """One competition result file per answered instance (the format ``polycert vnncomp --result`` writes:
    ``unsat``, ``sat`` with the counterexample, or ``unknown``); returns the paths in instance order."""
    from polycert.formulations.vnnlib import format_result

    written, taken = [], set()
    for cert in certificates:
        onnx_name, prop_name, _ = instance_names(job, cert)
        name = result_file_name(onnx_name, prop_name)
        if name in taken:  # the same pair listed twice
            name = name.replace(".counterexample", f"_{cert['item']}.counterexample")
        taken.add(name)
        word = {"holds": "unsat", "violated": "sat"}.get(cert["answer"] or "unknown", "unknown")
        y = (cert["extra"] or {}).get("y")
        if word == "sat" and (cert["counterexample"] is None or y is None):
            word = "unknown"  # never a sat without its counterexample
        path = folder / name
        path.write_text(format_result(word, cert["counterexample"], y))
        written.append(path)
    return written


def _vnnlib_text(path: Path) -> str:
    import gzip

    data = path.read_bytes()
    return (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode()


@app.command("vnncomp-batch")
def vnncomp_batch(
    instances: Annotated[str, typer.Argument(help="instances.csv: onnx,vnnlib,timeout per line (paths relative to it)")],
    timeout_scale: Annotated[float, typer.Option(help="multiply every instance's timeout by this")] = 1.0,
    solver: Optional[str] = None,
    wait: Annotated[bool, typer.Option(help="follow the job (always, when embedded)")] = True,
    results_dir: Annotated[Optional[str], typer.Option(help="write each instance's result file here once the job is done")] = None,
) -> None:
    """A VNN-COMP batch through the queue: one task per instance; prints the competition table. With
    --url the ONNX files are uploaded to the server (its upload limits apply)."""
    from polycert.batches import VnncompRequest

    if not (math.isfinite(timeout_scale) and timeout_scale > 0):
        raise fail(f"--timeout-scale must be a positive number, got {timeout_scale}", EXIT_BAD_INPUT)
    rows = read_instances(instances, timeout_scale)
    backend = _backend()
    if results_dir is not None:
        if not (_runs_here(backend) or wait):
            raise fail("--results-dir needs the job's answers: drop --no-wait", EXIT_BAD_INPUT)
        try:
            Path(results_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise fail(f"cannot create the results folder {results_dir}: {exc.strerror or exc}", EXIT_BAD_INPUT) from None
        check_writable(str(Path(results_dir) / "x"))
    specs, ids = [], {}
    for onnx, vnnlib, timeout in rows:
        try:
            if onnx not in ids:
                ids[onnx] = _instance_network(backend, onnx)
            text = _vnnlib_text(vnnlib)
        except OSError as exc:
            raise fail(f"cannot read {exc.filename}: {exc.strerror}", EXIT_NOT_FOUND) from None
        except ApiError as exc:
            if exc.status_code in (0, 401, 403) or onnx.name in exc.message:
                raise
            raise ApiError(exc.status_code, f"{onnx.name}: {exc.message}") from None
        specs.append(dict(network_id=ids[onnx], vnnlib=text, timeout=timeout, name=f"{onnx.name},{vnnlib.name}"))
    request = _request(VnncompRequest, kind="vnncomp", instances=specs, solver=solver)
    job_id = _run(backend, request, wait)
    if not (_runs_here(backend) or wait):
        console.print(f"job id: {job_id}")
        return
    job, answered = backend.job(job_id), backend.results(job_id)
    table = Table(title=f"VNN-COMP answers (job {job_id}, timeout scale {timeout_scale})")
    for col in ("instance", "network", "property", "timeout", "answer", "stage", "seconds"):
        table.add_column(col, justify="right", no_wrap=True)
    counts: dict[str, int] = {}
    for cert in answered:
        onnx_name, prop_name, instance_timeout = instance_names(job, cert)
        word = cert["answer"] or "unknown"
        counts[word] = counts.get(word, 0) + 1
        table.add_row(str(cert["item"]), onnx_name, prop_name, f"{instance_timeout:.1f}", word, cert["stage"] or "-",
                      f"{cert['wall_time']:.2f}")
    console.print(table)
    console.print(", ".join(f"{word} {n}" for word, n in sorted(counts.items())) + f" of {len(rows)} instances")
    if results_dir is not None:
        try:
            written = write_results(Path(results_dir), job, answered)
        except OSError as exc:
            raise fail(f"cannot write a result file in {results_dir}: {exc.strerror or exc}", EXIT_BAD_INPUT) from None
        console.print(f"{len(written)} result files written to {results_dir}")
    console.print(f"job id: {job_id}")


def _instance_network(backend, onnx: Path) -> int:
    """The id of an instance's network: uploaded to a server; here, registered from the file as it is (no
    upload limits, and an instance names its own box, so a stored domain is not held against it)."""
    from polycert.local import Local

    if isinstance(backend, Local):
        return backend.register_onnx(onnx)["id"]
    return backend.upload_network(onnx)["id"]


@app.command()
def demo(
    network: str = "polycert-tiny",
    count: Annotated[int, typer.Option(help="how many test images for the robustness job")] = 50,
    eps: Annotated[list[float], typer.Option(help="radius; repeat for several")] = [0.01, 0.02],
    methods: str = "both",
    signature_count: Annotated[int, typer.Option(help="test images for the signature job (0: none)")] = 30,
    signature_eps: float = 0.05,
    time_limit: float = 30.0,
) -> None:
    """The README's main job, the product's three uses on the embedded default (SQLite + in-process worker)
    unless POLYCERT_* settings or --url say otherwise: a robustness batch with LP and exact MIP bounds, a signature
    job, then the LP-versus-MIP comparison and one digit's signature."""
    from polycert import zoo
    from polycert.batches import SignatureRequest

    bad = [v for v in [*eps, signature_eps] if not math.isfinite(v) or v < 0]
    if bad:
        raise fail(f"eps must be a finite number >= 0, got {bad[0]}", EXIT_BAD_INPUT)
    backend = _backend()
    console.print(f"network {network}: loading (trained on first use)")
    net = backend.register_builtin(network)
    shipped = {info.name: info.preprocessing for info in zoo.builtin_networks()}
    preprocessing = shipped.get(net["name"], "mnist7-area" if net["input_size"] == 49 else "mnist28")
    if REMOTE.url:
        where = f"the server at {REMOTE.url}"
    else:
        settings = _settings()
        where = "embedded worker, " + settings.resolved_database_url if settings.embedded else "Celery workers"
    console.print(f"1. robustness: {net['architecture']}; {count} test images ({preprocessing}), eps {eps}, methods "
                  f"{methods}, bounds and tight constraints; {where}", highlight=False)
    request = _request(network=net["name"], dataset=dict(name=preprocessing, start=0, stop=count), eps=eps,
                       methods=methods, time_limit=time_limit)
    job_id = _run(backend, request, wait=True)
    signature_job_id = None
    if signature_count > 0:
        console.print(f"2. signatures: max logit[label] over the eps-{signature_eps:g} ball of {signature_count} test "
                      "images, LP and exact MIP, with the constraints tight at each optimum", highlight=False)
        sig_request = _request(SignatureRequest, kind="signature", network=net["name"],
                               dataset=dict(name=preprocessing, start=0, stop=signature_count), eps=[signature_eps],
                               methods="both", time_limit=time_limit)
        signature_job_id = _run(backend, sig_request, wait=True)
    if methods == "both":
        console.print("3. LP versus MIP on the robustness job:")
        print_comparison(backend.comparison(job_id, rows=False)["summary"])
    if signature_job_id is not None:
        answers = backend.results(signature_job_id)
        digit = answers[0]["label"] if answers else 0
        result = backend.signatures(digit=digit, network=net["id"], job=signature_job_id, method="mip",
                                    source="signature")
        console.print(f"4. digit {digit}'s exact signature (job {signature_job_id}, n = {result['n']}): share of optima "
                      "with the pixel at its lower / upper bound (' ' none ... '@' all)", highlight=False)
        lower = heatmap(result["pixel_lower"], result["image_side"])
        upper = heatmap(result["pixel_upper"], result["image_side"])
        for a, b in zip(lower, upper):
            console.print(f"  lower |{a}|   upper |{b}|", highlight=False)
    console.print("more: polycert compare " + str(job_id) + " --rows | polycert compare " + str(job_id) + " --by digit | "
                  + (f"polycert signatures --network {net['name']} --digit D --job {signature_job_id} | " if signature_job_id
                     else "") + "polycert results " + str(job_id) + " --format csv | "
                  + "polycert serve (then GET /signatures, /jobs/{id}/comparison)", highlight=False)


@app.command("study")
def study(
    network: Annotated[str, typer.Option(help="a built-in network name (polycert-tiny, verianet) or a network file")] = "polycert-tiny",
    out: Annotated[str, typer.Option(help="folder for README.md, results.json and the PNG figures")] = "study-report",
    per_digit: Annotated[int, typer.Option(help="robustness: first N test images of each digit")] = 600,
    eps: Annotated[list[float], typer.Option(help="robustness radius; repeat for several")] = [0.005, 0.01, 0.02, 0.05, 0.1],
    signature_per_digit: int = 50,
    signature_eps: float = 0.05,
    classifier_per_digit: int = 20,
    lam: Annotated[list[float], typer.Option(help="system-level L1 weight; repeat for several")] = [0.0, 0.1],
    flawed_per_digit: Annotated[Optional[int], typer.Option(help="images per digit for the study's flawed LP (default: per-digit)")] = None,
    mip_time_limit: float = 30.0,
    solver: Optional[str] = None,
    lp_solver: Optional[str] = None,
    progress: bool = True,
    from_job: Annotated[Optional[int], typer.Option(
        help="re-render the signature section of the report in --out from this signature job's stored certificates "
             "(the configured database); the other sections stay")] = None,
) -> None:
    """Reproduce the original study (signatures, robustness rates, LP classifier, system level, neuron
    patterns) with sound certificates, and write a Markdown report with figures.

    With --from-job J: the signature section (tables and figures) of an existing report is rebuilt from the
    certificates signature job J stored, e.g. the study's 600 images per digit run through the queue."""
    import shlex

    from polycert.formulations.errors import SolverNotAvailableError
    from polycert.study import StudyOptions, run_study

    for option, values in (("--eps", eps), ("--signature-eps", [signature_eps]), ("--lam", lam),
                           ("--mip-time-limit", [mip_time_limit])):
        bad = [v for v in values if not math.isfinite(v) or v < 0]
        if bad:
            raise fail(f"{option} must be a finite number >= 0, got {bad[0]}", EXIT_BAD_INPUT)
    options = StudyOptions(per_digit=per_digit, eps=tuple(eps), signature_per_digit=signature_per_digit,
                           signature_eps=signature_eps, classifier_per_digit=classifier_per_digit, lambdas=tuple(lam),
                           flawed_per_digit=flawed_per_digit, mip_time_limit=mip_time_limit, solver=solver,
                           lp_solver=lp_solver, progress=progress)
    command = "polycert " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if from_job is not None:
        from polycert.db.session import session_factory
        from polycert.errors import NotFoundError
        from polycert.study import rerender_signatures

        _local_only("study --from-job")
        try:
            with session_factory(_engine())() as session:
                readme = rerender_signatures(out, session, from_job, command=command)
        except NotFoundError as exc:
            raise fail(str(exc), EXIT_NOT_FOUND) from None
        except PolyCertError as exc:
            raise fail(str(exc), EXIT_BAD_INPUT) from None
        console.print(f"signature section re-rendered: {readme}")
        return
    try:
        readme = run_study(network, out, options, command=command)
    except SolverNotAvailableError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    except PolyCertError as exc:
        raise fail(str(exc), EXIT_BAD_INPUT) from None
    console.print(f"report written: {readme}")


def main() -> None:
    try:
        app()
    finally:
        from polycert.dispatch import reset_dispatchers

        reset_dispatchers()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
