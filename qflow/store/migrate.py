"""Create or migrate the results DB with Alembic."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from qflow.errors import NoResultsDB, UserError
from qflow.store.db import Store

_SCRIPTS = Path(__file__).with_name("migrations")


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


@lru_cache(maxsize=1)
def head() -> str:
    """The newest revision among the migration scripts."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(store: Store) -> str | None:
    """The DB's Alembic revision, or None for an empty DB."""
    with store.read() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:
            return None


def upgrade(store: Store) -> str:
    """Bring the schema to the newest revision; return it."""
    _refuse_newer(current_revision(store))
    cfg = _alembic_config()
    with store.write() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return head()


def ensure_schema(store: Store) -> None:
    """Create SQLite DBs on first use; ask for ``qflow db upgrade`` elsewhere."""
    revision, newest = current_revision(store), head()
    if revision == newest:
        return
    _refuse_newer(revision)
    if store.dialect == "sqlite":
        upgrade(store)
        return
    state = "is empty" if revision is None else f"is at revision {revision}, not {newest}"
    raise UserError(f"the results DB {state}: run `qflow db upgrade`")


def check_schema(store: Store) -> None:
    """For commands that only read: the schema must be current; nothing is created or
    migrated (a read must not change a DB another qflow version may be using)."""
    revision, newest = current_revision(store), head()
    if revision == newest:
        return
    _refuse_newer(revision)
    if revision is None:
        raise NoResultsDB("the results DB is empty: nothing has run with this "
                          "QFLOW_DATABASE_URL yet")
    raise UserError(f"the results DB is at revision {revision}, not {newest}: run "
                    "`qflow db upgrade`")


def _refuse_newer(revision: str | None) -> None:
    """A DB migrated by a newer qflow has a revision this one does not know: say so
    rather than fail inside Alembic (or, worse, run against a schema it does not know)."""
    if revision is None:
        return
    try:
        ScriptDirectory.from_config(_alembic_config()).get_revision(revision)
    except CommandError:
        raise UserError(f"the results DB is at revision {revision}, newer than this qflow "
                        f"knows (its newest is {head()}): upgrade qflow") from None
