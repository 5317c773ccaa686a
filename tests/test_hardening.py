"""Bad input, leaks and silent hangs: each case as a user (or an attacker) would meet it,
against real processes, Redis and PostgreSQL."""
from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, new_pg_database, qflow_env, run_id_in
from servers import free_port

FLOWS = str(ROOT / "tests" / "flows.py")

ETL = """
from qflow import task, workflow

@task(queue="etl")
def extract() -> int:
    return 41

@task
def load(n: int) -> int:
    return n + 1

@workflow
def etl():
    load(extract())
"""


def qflow(*args: str, cwd: Path, timeout: float = 90, **env: str):
    return subprocess.run(["qflow", *args], cwd=cwd, env=qflow_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(out, code: int) -> str:
    """The single stderr line of a failed command (no traceback), without its prefix."""
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("qflow: error: "), lines[0]
    return lines[0].removeprefix("qflow: error: ")


# -- 5. a queue no worker serves -------------------------------------------------------
def test_the_embedded_worker_runs_tasks_routed_to_any_queue(tmp_path):
    (tmp_path / "etl.py").write_text(ETL)
    out = qflow("-A", "etl.py", "run", "etl", cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "load returned:\n42" in out.stdout


def _wait_state(env: dict, cwd: Path, run_id: str, state: str, timeout: float = 60) -> dict:
    import time
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["qflow", "status", run_id, "--json"], env=env, cwd=cwd,
                             capture_output=True, text=True, timeout=60)
        status = json.loads(out.stdout)
        if status["state"] == state or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def test_trigger_and_status_say_when_no_live_worker_serves_a_tasks_queue(
        tmp_path, redis_url, pg_server_url):
    from conftest import start_cluster
    (tmp_path / "etl_flows.py").write_text(ETL)
    cluster = start_cluster(redis_url.rsplit("/", 1)[0] + "/8", pg_server_url, tmp_path, 1,
                            app=str(tmp_path / "etl_flows.py"))
    try:
        out = subprocess.run(["qflow", "trigger", "etl"], env=cluster.env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        run_id = out.stdout.strip()
        assert out.stderr.strip() == (
            "qflow: warning: no live worker serves queue 'etl', which extract waits on: "
            "start one with `qflow worker -Q etl`")
        status = _wait_state(cluster.env, tmp_path, run_id, "running", timeout=3)
        assert status["state"] == "queued"
        assert status["warnings"] == [out.stderr.strip().removeprefix("qflow: warning: ")]

        cluster.start_worker("etl", "-Q", "etl", "-c", "1")
        cluster.wait_ready(names=["etl"])
        status = _wait_state(cluster.env, tmp_path, run_id, "succeeded")
        assert status["state"] == "succeeded" and status["warnings"] == []
    finally:
        cluster.stop()


# -- 6. a relative SQLite path with a real broker ----------------------------------------
def test_a_relative_sqlite_path_with_a_broker_is_refused_and_an_absolute_one_works(
        tmp_path, redis_url):
    env = dict(QFLOW_APP=FLOWS, QFLOW_BROKER_URL=redis_url.rsplit("/", 1)[0] + "/7")
    for url in ("", "sqlite:///qflow.db", "sqlite://"):
        out = qflow("trigger", "diamond", cwd=tmp_path, QFLOW_DATABASE_URL=url, **env)
        assert "is private to each process" in one_line_error(out, 2)
    assert not (tmp_path / "qflow.db").exists()
    shared = f"sqlite:///{tmp_path}/shared.db"
    out = qflow("trigger", "diamond", "--json", cwd=tmp_path, QFLOW_DATABASE_URL=shared, **env)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["run_id"]) == 32


# -- 8. passwords --------------------------------------------------------------------------
@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
    ("postgresql://u:s3cret@h:99999/db", "postgresql://u:***@h:99999/db"),
    ("postgresql://u@h/db?sslmode=require&password=s3cret",
     "postgresql://u@h/db?sslmode=require&password=***"),
    ("sentinel://:s3cret@h1:26379;sentinel://:s3cret@h2:abc",
     "sentinel://:***@h1:26379;sentinel://:***@h2:abc"),
    ("postgresql://u:s3/cr@et@h/db", "postgresql://u:***@h/db"),
    ("sqlite:////srv/qflow.db", "sqlite:////srv/qflow.db"),
])
def test_hide_password_masks_every_form_and_never_raises(url, shown):
    from qflow.errors import hide_password
    assert hide_password(url) == shown


def test_no_command_prints_a_database_password(tmp_path, pg_server_url):
    from sqlalchemy.engine import make_url
    db = make_url(new_pg_database(pg_server_url)).set(password="s3cret")
    url = db.render_as_string(hide_password=False)
    (tmp_path / "etl.py").write_text(ETL)
    upgraded = qflow("db", "upgrade", cwd=tmp_path, QFLOW_DATABASE_URL=url)
    assert upgraded.returncode == 0, upgraded.stderr
    ran = qflow("-A", "etl.py", "run", "etl", cwd=tmp_path, QFLOW_DATABASE_URL=url)
    assert ran.returncode == 0, ran.stderr
    assert "postgres:***@127.0.0.1" in upgraded.stdout + ran.stdout
    bad_port = url.replace(f":{db.port}/", ":99999/")
    refused = qflow("runs", cwd=tmp_path, QFLOW_DATABASE_URL=bad_port)
    assert "port 99999 is not between 1 and 65535" in one_line_error(refused, 2)
    unreachable = qflow("runs", cwd=tmp_path,
                        QFLOW_DATABASE_URL=url.replace(f":{db.port}/", f":{free_port()}/")
                        + "?password=s3cret")
    assert "password=***" in one_line_error(unreachable, 3)
    for out in (upgraded, ran, refused, unreachable):
        assert "s3cret" not in out.stdout + out.stderr


# -- 9. Flower's published password, SMTP in clear --------------------------------------
def test_docker_compose_has_no_default_flower_password():
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in compose
    assert "${FLOWER_BASIC_AUTH:?" in compose       # compose refuses to start without one


def _tls_identity(folder: Path) -> tuple[str, str]:
    """A key and a self-signed certificate for 127.0.0.1, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = folder / "smtp.key", folder / "smtp.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(key_path), str(cert_path)


class TlsMailbox:
    """An aiosmtpd server that offers STARTTLS and accepts mail only over TLS."""

    def __init__(self, folder: Path):
        import ssl

        from aiosmtpd.controller import Controller

        key, cert = _tls_identity(folder)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.cert, self.received = cert, []
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                outer.received.append(session.ssl is not None)
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                     tls_context=context, require_starttls=True)
        self.controller.start()


def test_alert_mail_uses_starttls_by_default_when_the_server_offers_it(tmp_path, monkeypatch):
    from qflow.config import Config
    from qflow.engine import notify

    mailbox = TlsMailbox(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", mailbox.cert)     # trust the test's certificate
    try:
        config = Config(smtp_host="127.0.0.1", smtp_port=mailbox.port,
                        notify_email_to="ops@example.org")
        notify._email(config, notify.Event("run_failed", "r1", "wf"))
        assert mailbox.received == [True]
        with pytest.raises(Exception, match="530"):     # the server wants TLS first
            notify._email(Config(smtp_host="127.0.0.1", smtp_port=mailbox.port,
                                 notify_email_to="ops@example.org", smtp_starttls=False),
                          notify.Event("run_failed", "r2", "wf"))
    finally:
        mailbox.controller.stop()


# -- 11. one-line errors instead of tracebacks -------------------------------------------
@pytest.mark.parametrize("broker, expected", [
    ("redis://127.0.0.1:99999/0", "bad broker URL redis://127.0.0.1:99999/0"),
    ("foo://somewhere", "unknown broker scheme 'foo'"),
    ("redis://:s3cret@127.0.0.1:6379/0;redis://:s3cret@h2:port",
     "bad broker URL redis://:***@h2:port"),
])
def test_a_bad_broker_url_is_a_one_line_error(tmp_path, broker, expected):
    out = qflow("-A", FLOWS, "trigger", "diamond", cwd=tmp_path, QFLOW_BROKER_URL=broker,
                QFLOW_DATABASE_URL=f"sqlite:///{tmp_path}/q.db")
    assert expected in one_line_error(out, 2)
    assert "s3cret" not in out.stderr


def test_a_corrupt_or_truncated_sqlite_file_is_a_one_line_error(tmp_path):
    good = tmp_path / "qflow.db"
    assert qflow("-A", FLOWS, "run", "diamond", cwd=tmp_path).returncode == 0
    (tmp_path / "truncated.db").write_bytes(good.read_bytes()[:3000])
    (tmp_path / "text.db").write_text("these are not the rows you are looking for\n" * 50)
    for name in ("truncated.db", "text.db"):
        for args in (["runs"], ["-A", FLOWS, "run", "diamond"]):
            out = qflow(*args, cwd=tmp_path, QFLOW_DATABASE_URL=f"sqlite:///{name}")
            assert f"results DB at sqlite:///{name}" in one_line_error(out, 3)


def _set_revision(db: Path, revision: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def test_a_db_from_a_newer_qflow_is_named_not_migrated_or_tracebacked(tmp_path):
    assert qflow("-A", FLOWS, "run", "diamond", cwd=tmp_path).returncode == 0
    _set_revision(tmp_path / "qflow.db", "9999")
    for args in (["runs"], ["db", "upgrade"], ["-A", FLOWS, "run", "diamond"]):
        message = one_line_error(qflow(*args, cwd=tmp_path), 2)
        assert message.startswith("the results DB is at revision 9999, newer than this "
                                  "qflow knows"), message


def test_read_only_commands_neither_create_nor_migrate_the_db(tmp_path):
    from qflow.store.migrate import head
    for args in (["runs", "--json"], ["-A", FLOWS, "workflows"]):
        out = qflow(*args, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    for args in (["status", "0" * 32], ["doctor"]):
        assert "no results DB at qflow.db" in one_line_error(qflow(*args, cwd=tmp_path), 2)
    assert not (tmp_path / "qflow.db").exists()

    assert qflow("-A", FLOWS, "run", "diamond", cwd=tmp_path).returncode == 0
    _set_revision(tmp_path / "qflow.db", "0001")        # as an older qflow left it
    for args in (["runs"], ["status", "0" * 32], ["logs", "0" * 32], ["doctor"]):
        assert "run `qflow db upgrade`" in one_line_error(qflow(*args, cwd=tmp_path), 2)
    with sqlite3.connect(tmp_path / "qflow.db") as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0001",)
    _set_revision(tmp_path / "qflow.db", head())


def test_sys_exit_in_a_workflow_file_is_a_one_line_error(tmp_path):
    (tmp_path / "quits.py").write_text("import sys\nsys.exit(5)\n")
    message = one_line_error(qflow("-A", "quits.py", "workflows", cwd=tmp_path), 2)
    assert message == (f"cannot load app file {tmp_path / 'quits.py'}: it called "
                       "sys.exit(5) while being imported")


FAILING = """
from qflow import task, workflow

@task
def huge():
    raise ValueError("x" * 3_000_000)

@task
def missing():
    raise KeyError("no such row")

@workflow
def failing():
    huge()
    missing()
"""


def test_a_failed_attempt_logs_one_line_and_keeps_the_traceback_for_logs_and_status(
        tmp_path):
    (tmp_path / "failing.py").write_text(FAILING)
    ran = qflow("-A", "failing.py", "run", "failing", cwd=tmp_path,
                QFLOW_ERROR_MAX_BYTES="10000")
    assert ran.returncode == 1
    assert "Traceback" not in ran.stdout + ran.stderr
    assert "TaskFailed" not in ran.stdout + ran.stderr
    run_id = run_id_in(ran.stdout)
    logs = qflow("logs", run_id, "missing", cwd=tmp_path).stdout
    assert "-- traceback:\nTraceback (most recent call last):" in logs
    assert 'raise KeyError("no such row")' in logs
    tasks = {t["node"]: t for t in json.loads(
        qflow("status", run_id, "--json", cwd=tmp_path).stdout)["tasks"]}
    assert tasks["missing"]["traceback"].endswith("KeyError: 'no such row'\n")
    # 12: the 3 MB message is cut to error_max_bytes, and not repeated in the traceback.
    error, trace = tasks["huge"]["error"], tasks["huge"]["traceback"]
    assert error.endswith(" … (truncated, 3000012 bytes)") and len(error) < 10_100
    assert 'raise ValueError("x" * 3_000_000)' in trace and len(trace) < 3000
    assert (tmp_path / "qflow.db").stat().st_size < 1_000_000


# -- 12. sizes and values ----------------------------------------------------------------
def test_nan_and_infinity_parameters_are_refused(tmp_path):
    (tmp_path / "floats.py").write_text(
        "from qflow import task, workflow\n\n@task\ndef show(x):\n    return x\n\n"
        "@workflow\ndef floats(x: float = 1.0, xs: list[float] = []):\n    show(x)\n")
    for param in ("x=nan", "x=-inf", "xs=[1, Infinity]", "xs=[NaN]"):
        out = qflow("-A", "floats.py", "run", "floats", "-p", param, cwd=tmp_path)
        assert "NaN and Infinity are not allowed" in one_line_error(out, 2), param
    assert not (tmp_path / "qflow.db").exists() or json.loads(
        qflow("runs", "--json", cwd=tmp_path).stdout) == []


def test_a_task_returning_nan_fails_with_a_clear_error():
    from qflow.core.outcomes import success
    for value in (float("nan"), [1.0, float("inf")], {"x": -float("inf")}):
        outcome = success(value, 1024)
        assert (outcome.state, outcome.error) == (
            "failed", "return value is not JSON-serialisable: Out of range float values "
                      "are not JSON compliant")
    assert success([1.5], 1024).result == "[1.5]"


MAPPED = """
from qflow import task, workflow

@task
def items() -> list[int]:
    return [1, 2, 3]

@task
def blob(i: int) -> str:
    return "x" * 400_000

@task
def size(parts: list[str]) -> int:
    return sum(map(len, parts))

@workflow
def mapped():
    size(blob.map(items()))
"""


def test_a_mapped_nodes_collected_results_obey_result_max_bytes(tmp_path):
    (tmp_path / "mapped.py").write_text(MAPPED)
    out = qflow("-A", "mapped.py", "run", "mapped", cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    status = json.loads(qflow("status", run_id_in(out.stdout), "--json", cwd=tmp_path).stdout)
    tasks = {t["node"]: t for t in status["tasks"]}
    assert [tasks[f"blob[{i}]"]["state"] for i in range(3)] == ["succeeded"] * 3
    assert tasks["blob"]["state"] == "failed"
    assert tasks["blob"]["error"] == (
        "TaskOutputError: the 3 results of blob.map() are 1200012 bytes together, larger "
        "than result_max_bytes (1048576)")
    assert tasks["size"]["state"] == "upstream_failed"
    fits = qflow("-A", "mapped.py", "run", "mapped", cwd=tmp_path,
                 QFLOW_RESULT_MAX_BYTES=str(2 * 1024 * 1024))
    assert fits.returncode == 0 and "size returned:\n1200000" in fits.stdout, fits.stdout


DAILY = """
from qflow import task, workflow

@task
def tick() -> int:
    return 1

@workflow(schedule="@daily")
def daily():
    tick()
"""


def test_backfill_counts_every_day_of_a_long_range_and_refuses_impossible_ones(
        tmp_path, registry):
    from qflow.cli.schedule import _backfill_times
    from qflow.engine.scheduler import schedule_of
    from qflow.loader import load_app

    (tmp_path / "daily_hardening.py").write_text(DAILY)
    load_app(str(tmp_path / "daily_hardening.py"))
    schedule = schedule_of(registry.WORKFLOWS["daily"])
    times = _backfill_times(schedule, "2010-01-01", "2020-01-01")    # 10 years and a day
    assert len(times) == 3653
    assert (times[0].isoformat(), times[-1].isoformat()) == (
        "2010-01-01T00:00:00+00:00", "2020-01-01T00:00:00+00:00")
    for start, end, expected in (
            ("0001-01-01", "9999-12-31", "between 0002-01-01 and 9998-12-31"),
            ("1990-01-01", "2026-01-01", "more than 10000 logical times between 1990-01-01")):
        out = qflow("-A", "daily_hardening.py", "backfill", "daily", "--start", start,
                    "--end", end, cwd=tmp_path)
        assert expected in one_line_error(out, 2)
    assert not (tmp_path / "qflow.db").exists()


WIDE = """
from qflow import task, workflow

@task
def count(rows: list[str], i: int) -> int:
    return len(rows) + i

@task
def total(counts: list[int]) -> int:
    return sum(counts)

@workflow
def wide(rows: list[str] = []):
    total([count(rows, i) for i in range(20)])
"""


def test_a_big_parameter_passed_to_many_tasks_is_stored_once(tmp_path):
    (tmp_path / "wide.py").write_text(WIDE)
    rows = json.dumps([f"row {i:04d} " + "x" * 40 for i in range(200)])   # about 10 KB
    out = qflow("-A", "wide.py", "run", "wide", "-p", f"rows={rows}", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "total returned:\n4190" in out.stdout           # 20 * 200 + (0 + ... + 19)
    with sqlite3.connect(tmp_path / "qflow.db") as conn:
        calls = conn.execute("SELECT SUM(LENGTH(call)) FROM qflow_tasks").fetchone()[0]
        params = conn.execute("SELECT LENGTH(params) FROM qflow_runs").fetchone()[0]
    assert params > len(rows) and calls < 3000, (params, calls)
