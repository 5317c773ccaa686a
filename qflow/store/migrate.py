"""Create or migrate the results DB with Alembic."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ..errors import UserError
from .db import Store

HEAD = "0001"
_SCRIPTS = Path(__file__).with_name("migrations")


def current_revision(store: Store) -> str | None:
    """The DB's Alembic revision, or None for an empty DB."""
    with store.read() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:
            return None


def upgrade(store: Store) -> str:
    """Bring the schema to the newest revision; return it."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    with store.write() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return HEAD


def ensure_schema(store: Store) -> None:
    """Create SQLite DBs on first use; ask for ``qflow db upgrade`` elsewhere."""
    revision = current_revision(store)
    if revision == HEAD:
        return
    if store.dialect == "sqlite":
        upgrade(store)
        return
    state = "is empty" if revision is None else f"is at revision {revision}, not {HEAD}"
    raise UserError(f"the results DB {state}: run `qflow db upgrade`")
