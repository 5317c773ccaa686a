"""Message signing: workers run only messages signed with a trusted certificate."""
from __future__ import annotations

import datetime as dt
import subprocess
import time

import pytest
from conftest import start_cluster


def make_identity(folder, name: str) -> tuple[str, str]:
    """A private key and a self-signed certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    key_path, cert_path = folder / f"{name}.key", folder / f"{name}.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(key_path), str(cert_path)


@pytest.fixture(scope="module")
def signed_cluster(redis_url, pg_server_url, tmp_path_factory):
    folder = tmp_path_factory.mktemp("signed")
    store = folder / "trusted"
    store.mkdir()
    key, cert = make_identity(folder, "qflow")
    (store / "qflow.pem").write_text(open(cert).read())
    c = start_cluster(redis_url.rsplit("/", 1)[0] + "/14", pg_server_url, folder, 1,
                      QFLOW_SECURITY_KEY=key, QFLOW_SECURITY_CERTIFICATE=cert,
                      QFLOW_SECURITY_CERT_STORE=str(store / "*.pem"))
    yield c, folder
    c.stop()


def test_signed_runs_work_and_unsigned_or_foreign_messages_are_refused(signed_cluster):
    cluster, folder = signed_cluster
    ok = subprocess.run(["qflow", "trigger", "diamond", "--wait"], env=cluster.env,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    unsigned = {k: v for k, v in cluster.env.items() if not k.startswith("QFLOW_SECURITY")}
    key, cert = make_identity(folder, "intruder")
    foreign = {**cluster.env, "QFLOW_SECURITY_KEY": key, "QFLOW_SECURITY_CERTIFICATE": cert}
    log = folder / "w1.log"
    for env, refusal in ((unsigned, "untrusted content"), (foreign, "unknown certificate")):
        out = subprocess.run(["qflow", "trigger", "diamond", "--json"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        deadline = time.monotonic() + 20
        while refusal not in log.read_text().lower():
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
    time.sleep(1)
    runs = subprocess.run(["qflow", "runs", "--json"], env=cluster.env, capture_output=True,
                          text=True).stdout
    import json
    states = sorted(r["state"] for r in json.loads(runs))
    assert states == ["queued", "queued", "succeeded"]     # the refused ones never ran


def test_an_incomplete_signing_setup_is_a_one_line_error(tmp_path, redis_url):
    from conftest import ROOT, qflow_env
    env = qflow_env(QFLOW_BROKER_URL=redis_url, QFLOW_APP=str(ROOT / "tests" / "flows.py"),
                    QFLOW_DATABASE_URL=f"sqlite:///{tmp_path}/q.db",
                    QFLOW_SECURITY_KEY=str(tmp_path / "missing.key"))
    out = subprocess.run(["qflow", "trigger", "diamond"], env=env, capture_output=True,
                         text=True, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == ("qflow: error: message signing needs security_key, "
                                  "security_certificate and security_cert_store together")


def test_a_signing_worker_never_sends_again_a_run_whose_messages_were_refused(
        redis_url, pg_server_url, tmp_path):
    """The reconciler re-publishes messages that went missing; in a signing cluster it
    must not re-send, signed, those of a run created by a process without the key."""
    import json
    store = tmp_path / "trusted"
    store.mkdir()
    key, cert = make_identity(tmp_path, "qflow")
    (store / "qflow.pem").write_text(open(cert).read())
    cluster = start_cluster(redis_url.rsplit("/", 1)[0] + "/9", pg_server_url, tmp_path, 1,
                            QFLOW_SECURITY_KEY=key, QFLOW_SECURITY_CERTIFICATE=cert,
                            QFLOW_SECURITY_CERT_STORE=str(store / "*.pem"),
                            QFLOW_REQUEUE_AFTER="1", QFLOW_HEARTBEAT_INTERVAL="0.5")
    try:
        unsigned = {k: v for k, v in cluster.env.items()
                    if not k.startswith("QFLOW_SECURITY")}
        out = subprocess.run(["qflow", "trigger", "diamond"], env=unsigned,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        refused = out.stdout.strip()
        time.sleep(8)                          # many reconciler rounds past requeue_after
        ok = subprocess.run(["qflow", "trigger", "diamond", "--wait"], env=cluster.env,
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        status = json.loads(subprocess.run(["qflow", "status", refused, "--json"],
                                           env=cluster.env, capture_output=True,
                                           text=True).stdout)
        assert status["state"] == "queued"
        assert all(t["attempts"] == 0 for t in status["tasks"])
        assert any("does not sign its messages" in w for w in status["warnings"])
        assert "untrusted content" in (tmp_path / "w1.log").read_text().lower()
    finally:
        cluster.stop()


def test_a_retry_without_the_key_is_refused_for_a_signed_run(signed_cluster):
    """Retrying is an order to run tasks again: one from a process without the key would
    be refused by the workers, yet the run's record says signed, so signing workers would
    send its tasks again themselves. It is refused at once instead, in one line."""
    import json
    cluster, _ = signed_cluster
    failed = subprocess.run(["qflow", "trigger", "failing", "--wait", "--json"],
                            env=cluster.env, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    run_id = json.loads(failed.stdout.splitlines()[0])["run_id"]

    def status():
        return json.loads(subprocess.run(["qflow", "status", run_id, "--json"],
                                         env=cluster.env, capture_output=True,
                                         text=True).stdout)
    before = status()
    unsigned = {k: v for k, v in cluster.env.items() if not k.startswith("QFLOW_SECURITY")}
    out = subprocess.run(["qflow", "retry", run_id], env=unsigned, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith(f"qflow: error: run {run_id} was created with message "
                                 "signing: retry it with security_key")
    assert len(out.stderr.strip().splitlines()) == 1
    after = status()
    assert after["state"] == "failed"
    assert [t["attempts"] for t in after["tasks"]] == [t["attempts"] for t in before["tasks"]]

    again = subprocess.run(["qflow", "retry", run_id, "--wait"], env=cluster.env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1, again.stdout + again.stderr    # it fails again, signed
    assert sum(t["attempts"] for t in status()["tasks"]) > sum(
        t["attempts"] for t in before["tasks"])
