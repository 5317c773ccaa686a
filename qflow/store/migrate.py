"""Create or migrate the results DB with Alembic."""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from qflow.errors import NoResultsDB, UserError

# SQLAlchemy too is imported only where it runs: `qflow status` checks the revision on a
# plain connection (qflow.store.status.plainly) against head().
if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

    from qflow.store.db import Store

_SCRIPTS = Path(__file__).with_name("migrations")
_REVISION = re.compile(r"^(down_revision|revision) = (?:\"(\w+)\"|None)$", re.M)


def _alembic_config() -> AlembicConfig:
    # Alembic is imported only to migrate: a command that reads (`qflow status`) checks
    # the schema with :func:`known_revisions` and starts without it.
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


@lru_cache(maxsize=1)
def known_revisions() -> dict[str, str | None]:
    """Each migration script's revision and the one it follows, read from the scripts."""
    out: dict[str, str | None] = {}
    for script in sorted((_SCRIPTS / "versions").glob("*.py")):
        found = {name: value or None for name, value in _REVISION.findall(script.read_text())}
        if found.get("revision"):
            out[found["revision"]] = found.get("down_revision")
    return out


@lru_cache(maxsize=1)
def head() -> str:
    """The newest revision among the migration scripts: the one no other follows."""
    revisions = known_revisions()
    newest = set(revisions) - set(revisions.values())
    if len(newest) != 1:
        raise UserError(f"qflow's migration scripts have {len(newest)} heads, not one")
    return newest.pop()


def current_revision(store: Store) -> str | None:
    """The DB's Alembic revision, or None for an empty DB."""
    from sqlalchemy.exc import DBAPIError

    from qflow.store.status import revision

    with store.read() as conn:
        try:
            return revision(conn)
        except DBAPIError:
            return None


def upgrade(store: Store) -> str:
    """Bring the schema to the newest revision; return it."""
    from alembic import command

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
    if revision is not None and revision not in known_revisions():
        raise UserError(f"the results DB is at revision {revision}, newer than this qflow "
                        f"knows (its newest is {head()}): upgrade qflow")
