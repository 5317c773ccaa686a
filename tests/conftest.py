"""Session fixtures: private Redis and PostgreSQL servers, stores and a worker cluster.

Locally a missing server binary skips the tests that need it, with what to install; in CI
(CI=true) it fails them.
"""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))

import servers  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parent.parent


def _missing(exc: Exception):
    if IN_CI:
        pytest.fail(f"CI needs this server: {exc}", pytrace=False)
    pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_url():
    if os.environ.get("QFLOW_TEST_REDIS_URL"):
        yield os.environ["QFLOW_TEST_REDIS_URL"]
        return
    try:
        server = servers.start_redis()
    except servers.ServerMissing as exc:
        _missing(exc)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def pg_server_url():
    if os.environ.get("QFLOW_TEST_DATABASE_URL"):
        yield os.environ["QFLOW_TEST_DATABASE_URL"]
        return
    try:
        server = servers.start_postgres()
    except servers.ServerMissing as exc:
        _missing(exc)
    yield server.url
    server.stop()


def new_pg_database(server_url: str) -> str:
    """Create an empty database on the test server; return its URL."""
    name = "qflow_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.engine.make_url(server_url).set(database=name).render_as_string(
        hide_password=False)


@pytest.fixture(scope="session")
def pg_url(pg_server_url):
    """One migrated database for the session's PostgreSQL tests."""
    return new_pg_database(pg_server_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Each store test runs against real SQLite and real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/qflow.db"
    return new_pg_database(request.getfixturevalue("pg_server_url"))


@pytest.fixture
def registry():
    """Leave the global workflow/task registries as they were after each test."""
    from qflow import authoring
    workflows, tasks = dict(authoring.WORKFLOWS), dict(authoring.TASKS)
    yield authoring
    authoring.WORKFLOWS.clear()
    authoring.WORKFLOWS.update(workflows)
    authoring.TASKS.clear()
    authoring.TASKS.update(tasks)
