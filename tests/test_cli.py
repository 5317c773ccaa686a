"""The command line as a user runs it: real processes, exit codes, JSON, one-line errors."""
from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, qflow_env, run_id_in
from servers import free_port

EXAMPLE = str(ROOT / "examples" / "daily_report.py")
FLOWS = str(ROOT / "tests" / "flows.py")


def qflow(*args: str, cwd: Path, env: dict | None = None, timeout: float = 60):
    return subprocess.run(["qflow", *args], cwd=cwd, env=env or qflow_env(),
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(out, code: int, pattern: str) -> None:
    assert out.returncode == code, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("qflow: error: ")
    assert pattern in lines[0], lines[0]


def test_the_example_runs_on_the_embedded_default_in_a_fresh_directory(tmp_path):
    out = qflow("-A", EXAMPLE, "run", "daily_report", "-p", "day=2026-11-20", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "build_report: succeeded" in out.stdout
    run_id = run_id_in(out.stdout)
    assert f"run {run_id} succeeded (7/7 tasks" in out.stdout
    report = json.loads(out.stdout.split("build_report returned:\n", 1)[1])
    with sqlite3.connect(tmp_path / "warehouse.db") as db:
        revenue = db.execute("SELECT SUM(revenue_cents) FROM store_sku_daily "
                             "WHERE day = '2026-11-20'").fetchone()[0]
    assert report["revenue_cents"] == revenue > 0
    assert (tmp_path / "qflow.db").exists()

    status = json.loads(qflow("status", run_id, "--json", cwd=tmp_path).stdout)
    assert {k: status[k] for k in ("run_id", "workflow", "state")} == {
        "run_id": run_id, "workflow": "daily_report", "state": "succeeded"}
    assert status["params"] == {"day": "2026-11-20", "stores": 4, "warehouse": "warehouse.db",
                                "fingerprint": False}
    assert all(status[k] for k in ("created_at", "started_at", "finished_at"))
    task = status["tasks"][0]
    assert set(task) >= {"node", "state", "attempts", "started_at", "finished_at", "error",
                         "worker"}
    assert [t["state"] for t in status["tasks"]] == ["succeeded"] * 7

    runs = json.loads(qflow("runs", "--json", cwd=tmp_path).stdout)
    assert [r["run_id"] for r in runs] == [run_id] and "tasks" not in runs[0]
    text = qflow("status", run_id, cwd=tmp_path).stdout
    assert "sanitize_and_merge" in text and "succeeded" in text


def test_a_failing_run_exits_1_and_shows_the_error(tmp_path):
    out = qflow("-A", FLOWS, "run", "failing", cwd=tmp_path)
    assert out.returncode == 1
    assert re.search(r"boom: failed in \d+\.\d\ds  ValueError: 1$", out.stdout, re.M)
    assert "add: upstream_failed" in out.stdout
    run_id = run_id_in(out.stdout)
    runs = json.loads(qflow("runs", "--state", "failed", "--json", cwd=tmp_path).stdout)
    assert [r["run_id"] for r in runs] == [run_id]


CYCLE = """
from qflow import task, workflow

@task
def step():
    return 1

@workflow
def loop():
    a, b = step(), step()
    a >> b
    b >> a
"""

BAD_OPTION = """
from qflow import task

@task(retrys=3)
def step():
    return 1
"""

DUPLICATE = """
from qflow import task, workflow

@task
def step():
    return 1

@workflow(name="report")
def report_{n}():
    step()
"""


@pytest.mark.parametrize("args, pattern", [
    (["-A", FLOWS, "run", "nope"], "unknown workflow 'nope' (known: "),
    (["-A", FLOWS, "run", "diamond", "-p", "x=abc"],
     "parameter 'x' of workflow 'diamond': expected an int, got 'abc'"),
    (["-A", FLOWS, "run", "diamond", "-p", "y=1"], "unknown parameter 'y' for workflow"),
    (["-A", FLOWS, "run", "diamond", "-p", "x"], "bad parameter 'x': expected -p name=value"),
    (["-A", FLOWS, "run", "fan_in"], "workflow 'fan_in' needs parameter 'marker'"),
    (["-A", "no_such_module", "workflows"], "cannot import app 'no_such_module'"),
    (["-A", "missing.py", "workflows"], "app file not found: missing.py"),
    (["workflows"], "no workflows loaded: pass -A/--app TARGET or set QFLOW_APP"),
    (["--config", "nope.toml", "runs"], "config file not found: nope.toml"),
    (["status", "0123"], "no results DB at qflow.db (nothing has run here yet"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, pattern):
    assert_one_line_error(qflow(*args, cwd=tmp_path), 2, pattern)


def test_a_cycle_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "cycle.py").write_text(CYCLE)
    for args in (["run", "loop"], ["graph", "loop"]):
        out = qflow("-A", "cycle.py", *args, cwd=tmp_path)
        assert_one_line_error(out, 2, "cycle in workflow: step -> step__1 -> step")
    assert not (tmp_path / "qflow.db").exists() or "loop" not in qflow(
        "runs", cwd=tmp_path).stdout


def test_an_unknown_decorator_option_is_refused_at_load(tmp_path):
    (tmp_path / "bad.py").write_text(BAD_OPTION)
    out = qflow("-A", "bad.py", "workflows", cwd=tmp_path)
    assert_one_line_error(out, 2, "@task on 'step': unknown option 'retrys'")


def test_two_workflows_with_one_name_are_refused(tmp_path):
    folder = tmp_path / "flows"
    folder.mkdir()
    for n in (1, 2):
        (folder / f"f{n}.py").write_text(DUPLICATE.format(n=n))
    out = qflow("-A", "flows", "workflows", cwd=tmp_path)
    assert_one_line_error(out, 2, "duplicate workflow name 'report'")


def test_an_unreachable_broker_exits_3_and_hides_the_password(tmp_path):
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    out = qflow("-A", FLOWS, "trigger", "diamond", cwd=tmp_path,
                env=qflow_env(QFLOW_BROKER_URL=url,
                              QFLOW_DATABASE_URL=f"sqlite:///{tmp_path}/q.db"))
    assert_one_line_error(out, 3, "cannot reach the broker at redis://:***@127.0.0.1:")
    assert "s3cret" not in out.stderr + out.stdout


def test_an_unreachable_database_exits_3_and_hides_the_password(tmp_path):
    url = f"postgresql+psycopg://qflow:s3cret@127.0.0.1:{free_port()}/qflow"
    for args in (["status", "abc"], ["runs"], ["db", "upgrade"]):
        out = qflow(*args, cwd=tmp_path, env=qflow_env(QFLOW_DATABASE_URL=url))
        assert_one_line_error(out, 3, "cannot reach the results DB at "
                                      "postgresql+psycopg://qflow:***@127.0.0.1:")
        assert "s3cret" not in out.stderr + out.stdout


def test_graph_prints_text_dot_and_mermaid(tmp_path):
    text = qflow("-A", EXAMPLE, "graph", "daily_report", cwd=tmp_path).stdout
    assert "sanitize_and_merge  <- extract_fulfillment, extract_inventory, " in text
    dot = qflow("-A", EXAMPLE, "graph", "daily_report", "--format", "dot", cwd=tmp_path).stdout
    assert dot.startswith('digraph "daily_report" {')
    assert '"load_warehouse" -> "build_report";' in dot
    mermaid = qflow("-A", EXAMPLE, "graph", "daily_report", "--format", "mermaid",
                    cwd=tmp_path).stdout
    assert mermaid.startswith("flowchart LR") and '["build_report"]' in mermaid
    wide = qflow("-A", FLOWS, "graph", "fan", "-p", "width=3", cwd=tmp_path).stdout
    assert "workflow fan (7 tasks)" in wide


def test_workflows_lists_params_tasks_and_schedules_as_json(tmp_path):
    out = qflow("-A", f"{EXAMPLE},{FLOWS}", "workflows", "--json", cwd=tmp_path)
    listed = {w["name"]: w for w in json.loads(out.stdout)}
    assert listed["daily_report"]["tasks"][:1] == ["extract_sales"]
    assert listed["daily_report"]["params"]["stores"] == "int = 4"
    assert listed["fan_in"]["tasks"] is None          # needs a parameter without default
    assert "schedule" in listed["diamond"]


def test_the_app_may_come_from_the_environment_as_a_module_path(tmp_path):
    env = qflow_env(QFLOW_APP="flows", PYTHONPATH=str(ROOT / "tests"))
    out = qflow("run", "chain", "-p", "length=3", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "add__2 returned:\n3" in out.stdout


def test_the_embedded_worker_finishes_what_an_earlier_process_left_queued(tmp_path):
    # A run recorded whose messages were lost with the process that made it.
    script = (
        "import sys; sys.path.insert(0, %r)\n"
        "import flows\n"
        "from test_store import StubDispatcher\n"
        "from qflow.config import Config\n"
        "from qflow.engine.client import Engine\n"
        "from qflow.store import Store\n"
        "from qflow.store.migrate import ensure_schema\n"
        "store = Store('sqlite:///qflow.db'); ensure_schema(store)\n"
        "print(Engine(Config(), store, StubDispatcher()).trigger('diamond', {'x': 4}))\n"
    ) % str(ROOT / "tests")
    orphan = subprocess.run(["python", "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, env=qflow_env()).stdout.strip()
    assert json.loads(qflow("status", orphan, "--json", cwd=tmp_path).stdout)["state"] == \
        "queued"
    out = qflow("-A", FLOWS, "run", "chain", "-p", "length=8", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    status = json.loads(qflow("status", orphan, "--json", cwd=tmp_path).stdout)
    assert status["state"] == "succeeded"


def test_help_imports_no_db_broker_or_terminal_library(tmp_path):
    """What keeps `qflow --help` fast (bench/cli_startup.py measures it): those libraries
    load only when a command that uses them runs."""
    code = ("import sys\nfrom qflow.cli.commands import cli\n"
            "cli.main(['--help'], prog_name='qflow', standalone_mode=False)\n"
            "print(sorted(m for m in ('sqlalchemy', 'celery', 'kombu', 'alembic', 'rich')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=qflow_env())
    assert out.returncode == 0, out.stderr
    assert "Usage: qflow" in out.stdout and "status" in out.stdout
    assert out.stdout.splitlines()[-1] == "[]"


def test_status_imports_only_what_reading_a_run_needs(tmp_path):
    """What keeps `qflow status` fast (bench/cli_startup.py): no broker library, no
    Alembic, not even SQLAlchemy (it reads through sqlite3 alone), no live display, and
    with --json not even the table library."""
    ran = qflow("-A", FLOWS, "run", "diamond", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    heavy = ("celery", "kombu", "alembic", "sqlalchemy", "qflow.cli.progress", "rich")
    for extra, loaded in (([], ["rich"]), (["--json"], [])):
        code = ("import sys\nfrom qflow.cli.commands import cli\n"
                f"cli.main(['status', {run_id_in(ran.stdout)!r}, *{extra!r}], "
                "prog_name='qflow', standalone_mode=False)\n"
                f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=tmp_path, env=qflow_env())
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[-1] == repr(loaded)


def test_the_schema_check_of_read_only_commands_knows_the_revisions_alembic_knows():
    from alembic.script import ScriptDirectory

    from qflow.store import migrate

    scripts = ScriptDirectory.from_config(migrate._alembic_config())
    assert migrate.head() == scripts.get_current_head()
    assert migrate.known_revisions() == {s.revision: s.down_revision
                                         for s in scripts.walk_revisions()}
