"""Alembic from code: ``polycert db upgrade`` and the start-up check that refuses unmigrated databases."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from polycert import migrations

# the package may be a namespace package in some installs: take its directory, not its __init__
MIGRATIONS_DIR = Path(list(migrations.__path__)[0]).resolve()


class DatabaseNotMigratedError(RuntimeError):
    """The database is not at the latest migration; the message says how to fix it."""


def alembic_config(url: str) -> Config:
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def ensure_migrated(engine: Engine) -> None:
    """Raise :class:`DatabaseNotMigratedError` unless the database is at the head revision."""
    try:
        current = current_revision(engine)
    except Exception as exc:  # unreachable server, bad URL: say which
        raise DatabaseNotMigratedError(f"cannot read the schema version of {engine.url!r}: {exc}") from None
    head = head_revision()
    if current != head:
        state = "has no PolyCert tables" if current is None else f"is at revision {current}, not {head}"
        raise DatabaseNotMigratedError(
            f"the database {engine.url.render_as_string(hide_password=True)} {state};"
            " run `polycert db upgrade` first"
        )
