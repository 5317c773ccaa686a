"""`qflow status` read through the DBAPI driver alone (qflow.store.plain) says exactly what
the full path through SQLAlchemy says, on SQLite and PostgreSQL, for runs of every shape;
and where it cannot answer, the full path does, with the same one-line errors."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import new_pg_database, qflow_env, run_id_in

from qflow.config import Config
from qflow.runtime import Runtime
from qflow.store import plain, queries, rendered
from qflow.store import status as read_status

SHAPES = '''
from qflow import Secret, task, workflow


@task
def numbers(n: int) -> list:
    return list(range(n))


@task
def square(x: int) -> int:
    return x * x


@task(retries=0)
def explode(token: str, values: list):
    raise ValueError(f"raised with \\x1b[31m{len(values)} values\\nand a second line")


@task
def after(value):
    return value


@workflow
def shapes(token: Secret[str] = "s3cret", n: int = 3):
    after(explode(token, square.map(numbers(n))))


@task
def fine() -> int:
    return 1


@task.sensor(poke_interval=3600, timeout=7200, mode="reschedule")
def never(value) -> bool:
    return False


@workflow
def sensing():
    never(fine())
'''


@pytest.fixture(scope="module")
def keygen():
    out = subprocess.run(["qflow", "keygen"], capture_output=True, text=True, env=qflow_env())
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def made(request, tmp_path_factory, keygen):
    """Two runs on the embedded default with an encryption key, made once per DB for the
    module's tests (which only read them): ``failed`` (a map, a secret parameter, a task
    that fails with a traceback, one upstream_failed) and ``sensing`` (a sensor waiting, so
    the run has not ended)."""
    tmp_path = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp_path}/qflow.db"
    else:
        db_url = new_pg_database(request.getfixturevalue("pg_server_url"))
    (tmp_path / "shapes.py").write_text(SHAPES)
    env = qflow_env(QFLOW_DATABASE_URL=db_url, QFLOW_APP=str(tmp_path / "shapes.py"),
                    QFLOW_ENCRYPTION_KEY=keygen)

    def qflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["qflow", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)

    assert qflow("db", "upgrade").returncode == 0
    failed = qflow("run", "shapes")
    assert failed.returncode == 1, failed.stderr
    sensing = qflow("run", "sensing", "--timeout", "3")
    return {"url": db_url, "key": keygen, "cwd": tmp_path, "env": env,
            "failed": run_id_in(failed.stdout), "sensing": run_id_in(sensing.stdout)}


def runtime(made, **more) -> Runtime:
    return Runtime(Config(database_url=made["url"], **more))


def full(rt: Runtime, run_id: str) -> dict:
    from qflow.client import run_status

    try:
        return run_status(rt, run_id)
    finally:
        rt.store.dispose()


def test_the_rendered_sql_is_what_the_statements_render_to():
    """Fails when a statement in qflow/store/queries.py changed and rendered.py was not
    written again: run `python -m qflow.store.queries`."""
    assert queries.module_text() == Path(rendered.__file__).read_text()


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://u:p%40w@127.0.0.1:5432/db?sslmode=disable&application_name=x",
    "postgresql+psycopg://localhost/db", "postgresql+psycopg:///db",
    "postgresql+psycopg://u@h:1/d%2Fx", "postgresql+psycopg://u:@h/d"])
def test_a_postgres_url_gives_the_driver_what_sqlalchemy_gives_it(url):
    from sqlalchemy.dialects.postgresql import psycopg
    from sqlalchemy.engine import make_url

    assert plain.postgres_args(url) == psycopg.dialect().create_connect_args(make_url(url))[1]


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://u:p@ss@h/d", "postgresql+psycopg://h:0/d",
    "postgresql+psycopg://h1,h2/d", "postgresql+psycopg://[::1]/d", "postgresql://h/d",
    "postgresql+psycopg://h/d?a=1&a=2", "sqlite:///a%20b.db", "sqlite://",
    "mysql://h/d"])
def test_urls_read_only_by_sqlalchemy_are_left_to_the_full_path(url):
    assert plain.connect(url) is None


def test_the_plain_path_reads_each_shape_of_run_as_the_full_path_does(made):
    for run_id in (made["failed"], made["sensing"]):
        fast = read_status.plainly(runtime(made, encryption_key=made["key"]), run_id)
        assert fast is not None
        assert fast == full(runtime(made, encryption_key=made["key"]), run_id)
    fast = read_status.plainly(runtime(made, encryption_key=made["key"]), made["failed"])
    assert fast["state"] == "failed" and fast["params"]["token"] == "***"
    states = {t["node"]: t["state"] for t in fast["tasks"]}
    assert states["explode"] == "failed" and states["after"] == "upstream_failed"
    assert states["square[2]"] == "succeeded" and fast["summary"]["critical_path"]
    explode = next(t for t in fast["tasks"] if t["node"] == "explode")
    assert "raised with" in explode["error"] and "ValueError" in explode["traceback"]
    sensing = read_status.plainly(runtime(made), made["sensing"])
    assert sensing["state"] == "running" and sensing["summary"] is None
    assert [t["state"] for t in sensing["tasks"]] == ["succeeded", "sensing"]


def test_without_the_key_both_paths_show_the_same_placeholders(made):
    fast = read_status.plainly(runtime(made), made["failed"])
    assert fast == full(runtime(made), made["failed"])
    explode = next(t for t in fast["tasks"] if t["node"] == "explode")
    assert "raised with" not in explode["error"]


def test_a_run_not_ended_with_a_broker_set_is_read_plainly_with_its_warnings(made):
    """Its warnings read the workers' liveness: rendered SQL too, by the DB's clock. No
    worker has been heard from, so nothing serves the sensor's queue; one heard from now
    that serves it silences the warning, on both paths."""
    broker = dict(broker_url="redis://127.0.0.1:1/0")
    fast = read_status.plainly(runtime(made, **broker), made["sensing"])
    assert fast is not None and fast == full(runtime(made, **broker), made["sensing"])
    assert fast["warnings"] == ["no live worker serves queue 'default', which never waits "
                                "on: start one with `qflow worker -Q default`"]
    ended = read_status.plainly(runtime(made, **broker), made["failed"])
    assert ended is not None and ended == full(runtime(made, **broker), made["failed"])
    from qflow.store import liveness
    rt = runtime(made, **broker)
    try:
        with rt.store.write() as conn:
            liveness.heartbeat(conn, "w@test", 1, liveness.utcnow(), queues="etl, default")
        assert full(runtime(made, **broker), made["sensing"])["warnings"] == []
        assert read_status.plainly(runtime(made, **broker), made["sensing"])["warnings"] == []
    finally:
        with rt.store.write() as conn:
            liveness.forget(conn, "w@test", 1)
        rt.store.dispose()


@pytest.mark.parametrize("as_json", [False, True])
def test_the_command_prints_the_same_bytes_on_both_paths(made, monkeypatch, as_json):
    from qflow.cli.commands import cli

    def printed() -> list[str]:
        out = []
        for run_id in (made["failed"], made["sensing"]):
            args = ["--database-url", made["url"], "status", run_id,
                    *(["--json"] if as_json else [])]
            done = CliRunner().invoke(cli, args, env={"QFLOW_ENCRYPTION_KEY": made["key"]},
                                      catch_exceptions=False)
            assert done.exit_code == 0, done.output
            out.append(done.output)
        return out

    fast = printed()
    taken = []
    real = read_status.plainly
    # The plain path reads (without printing), then leaves the printing to the full path.
    monkeypatch.setattr(read_status, "plainly",
                        lambda rt, run_id, every, then: taken.append(real(rt, run_id, every)))
    assert fast == printed()
    assert all(taken)                   # the plain path could have answered: it was compared
    if as_json:
        assert json.loads(fast[0])["params"]["token"] == "***"


def test_lists_of_runs_read_plainly_are_the_full_paths_for_every_filter(made):
    import datetime as dt

    from qflow.store import read

    rt = runtime(made)
    with rt.store.read() as conn:
        created = dt.datetime.fromisoformat(
            read.get_run(conn, made["sensing"], with_tasks=False)["created_at"]
        ).replace(tzinfo=None)
        asks = [(None, None, 20, None, None), ("shapes", None, 20, None, None),
                (None, "failed", 20, None, None), (None, None, 1, None, None),
                (None, None, 20, created, None), (None, None, 20, None, created),
                ("sensing", "running", 5, created, created + dt.timedelta(seconds=1)),
                ("nothing", None, 20, None, None)]
        every = [read.list_runs(conn, *ask) for ask in asks]
    rt.store.dispose()
    assert [read_status.runs_plainly(runtime(made), *ask) for ask in asks] == every
    ids = [[r["run_id"] for r in found] for found in every]
    assert ids[4] == [made["sensing"]] and ids[5] == [made["failed"]]   # since <=, until <
    assert ids[:4] == [[made["sensing"], made["failed"]], [made["failed"]], [made["failed"]],
                       [made["sensing"]]]
    assert ids[6] == [made["sensing"]] and ids[7] == []


@pytest.mark.parametrize("args", [["runs"], ["runs", "--json"],
                                  ["runs", "--state", "failed", "--since", "1h", "--json"]])
def test_runs_prints_the_same_bytes_on_both_paths(made, monkeypatch, args):
    from qflow.cli.commands import cli

    def printed() -> str:
        done = CliRunner().invoke(cli, ["--database-url", made["url"], *args],
                                  catch_exceptions=False)
        assert done.exit_code == 0, done.output
        return done.output

    fast = printed()
    taken = []
    real = read_status.runs_plainly
    monkeypatch.setattr(read_status, "runs_plainly",
                        lambda rt, *ask: taken.append(real(rt, *ask)))
    assert fast == printed() and taken[0]
    assert made["failed"] in fast


def cli_out(made, *args: str, url: str | None = None) -> subprocess.CompletedProcess:
    env = {**made["env"], "QFLOW_DATABASE_URL": url or made["url"]}
    return subprocess.run(["qflow", *args], cwd=made["cwd"], env=env, capture_output=True,
                          text=True, timeout=60)


def test_an_unknown_run_and_a_db_to_migrate_give_the_full_paths_one_line_errors(made):
    unknown = cli_out(made, "status", "0" * 32)
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr == f"qflow: error: unknown run {'0' * 32!r}\n"
    rt = runtime(made)
    with rt.store.read() as conn:
        current = read_status.revision(conn)
    try:
        with rt.store.write() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0015'")
        old = cli_out(made, "status", made["failed"])
    finally:
        with rt.store.write() as conn:
            conn.exec_driver_sql(f"UPDATE alembic_version SET version_num = '{current}'")
        rt.store.dispose()
    assert old.returncode == 2 and old.stdout == ""
    assert old.stderr.startswith("qflow: error: the results DB is at revision 0015, not ")
    assert old.stderr.endswith(": run `qflow db upgrade`\n")


def test_status_reads_without_sqlalchemy(made):
    """What makes `qflow status` fast (bench/cli_startup.py); --watch still takes the full
    path."""
    heavy = ("sqlalchemy", "celery", "kombu", "alembic", "qflow.cli.progress")
    code = ("import sys\nfrom qflow.cli.commands import cli\n"
            f"cli.main(['status', {made['failed']!r}, '--json'], prog_name='qflow', "
            "standalone_mode=False)\n"
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=made["cwd"], env=made["env"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[]"


def test_a_missing_or_foreign_sqlite_file_is_left_to_the_full_path(tmp_path):
    assert plain.connect(f"sqlite:///{tmp_path}/none.db") is None
    assert not (tmp_path / "none.db").exists()            # nothing created
    (tmp_path / "junk.db").write_text("not a database" * 100)
    with plain.connect(f"sqlite:///{tmp_path}/junk.db") as conn:
        with pytest.raises(plain.Unavailable):
            read_status.revision(conn)
    with sqlite3.connect(tmp_path / "empty.db"):
        pass
    rt = Runtime(Config(database_url=f"sqlite:///{tmp_path}/empty.db"))
    assert read_status.plainly(rt, "0" * 32) is None
