"""Results outside the DB: encryption, the result store, serializers, Secret parameters.

Unit tests of qflow.results, then the embedded default through the CLI, then real worker
processes on Redis and PostgreSQL (a 200 MB value between two workers, a changed object,
a wrong key, a missing store).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, qflow_env, run_id_in

from qflow.core.params import Secret, params_of
from qflow.errors import ParamError, UserError
from qflow.results import codec, crypto, secrets
from qflow.results.codec import OutputError, ResultError, Results
from qflow.results.store import open_store

FLOWS = str(ROOT / "tests" / "result_flows.py")


@pytest.fixture
def keyring():
    return crypto.Keyring([crypto.new_key()])


@pytest.fixture
def store_dir(tmp_path):
    path = tmp_path / "results"
    path.mkdir()
    return path


def object_path(stored) -> Path:
    from urllib.parse import unquote, urlsplit
    return Path(unquote(urlsplit(stored.ref["url"]).path))


# -- encryption ---------------------------------------------------------------------------
def test_sealed_text_opens_with_any_listed_key_and_never_holds_the_clear_text(keyring):
    sealed = keyring.seal("the marker 42")
    assert sealed.startswith(crypto.PREFIX) and "marker" not in sealed
    assert keyring.open(sealed) == "the marker 42"
    old = crypto.new_key()
    rotated = crypto.Keyring([crypto.new_key(), old])       # new first: it encrypts
    by_old = crypto.Keyring([old]).seal("written before the rotation")
    assert rotated.open(by_old) == "written before the rotation"
    with pytest.raises(crypto.DecryptError, match="not in encryption_key"):
        crypto.Keyring([old]).open(rotated.seal("new"))


def test_a_stream_of_many_chunks_round_trips_and_any_change_is_refused(keyring):
    data = os.urandom(3 * crypto.CHUNK + 12345)
    enc = keyring.encryptor()
    out = enc.update(data[:1000]) + enc.update(data[1000:]) + enc.finish()
    assert b"".join(keyring.decrypt([out[i:i + 7000] for i in range(0, len(out), 7000)])) == data
    flipped = bytearray(out)
    flipped[len(out) // 2] ^= 1
    with pytest.raises(crypto.DecryptError, match="does not authenticate"):
        b"".join(keyring.decrypt([bytes(flipped)]))
    with pytest.raises(crypto.DecryptError, match="cut short"):
        b"".join(keyring.decrypt([out[:-100]]))


@pytest.mark.parametrize("key", ["short", "", "not base64 at all!!"])
def test_a_malformed_key_is_a_one_line_error(key):
    with pytest.raises(UserError, match="qflow keygen"):
        crypto.Keyring([key] if key else ["x"])


# -- the result store and serializers -------------------------------------------------------
def test_values_go_to_the_store_encrypted_and_come_back(store_dir, keyring):
    results = Results(open_store(f"file://{store_dir}"), keyring)
    stored = results.keep({"rows": [1, 2, "marker"]}, "json", 10, "run1", "load[3]", 2)
    assert stored.text is None and stored.ref["size"] > 0 and stored.ref["encrypted"]
    path = object_path(stored)
    assert path.is_file() and path.relative_to(store_dir).parts[0] == "run1"
    assert b"marker" not in path.read_bytes()
    # result_max_bytes applies only to values kept in the DB
    assert results.load(stored) == {"rows": [1, 2, "marker"]}


def test_pickled_values_need_a_store_and_a_key(store_dir, keyring):
    with pytest.raises(OutputError, match="needs a result_store"):
        Results(None, keyring).keep({1, 2}, "pickle", 100, "r", "n", 1)
    with pytest.raises(OutputError, match="encryption_key or result_signing_key"):
        Results(open_store(f"file://{store_dir}"), None).keep({1, 2}, "pickle", 100, "r",
                                                               "n", 1)
    results = Results(open_store(f"file://{store_dir}"), None, signing_key="s3cret")
    stored = results.keep({1, 2}, "pickle", 100, "r", "n", 1)
    assert "hmac" in stored.ref and results.load(stored) == {1, 2}


def test_a_changed_pickle_with_its_hash_updated_still_fails_its_hmac(store_dir):
    results = Results(open_store(f"file://{store_dir}"), None, signing_key="s3cret")
    stored = results.keep(["safe"], "pickle", 100, "r", "n", 1)
    import hashlib
    import pickle
    forged = pickle.dumps(["forged"], protocol=5)
    object_path(stored).write_bytes(forged)
    ref = dict(stored.ref, sha256=hashlib.sha256(forged).hexdigest())
    with pytest.raises(ResultError, match="does not authenticate") as err:
        results.load(codec.Stored(ref=ref), "n")
    assert "\n" not in str(err.value)


def test_without_a_store_values_stay_in_the_db_capped_and_sealed_with_a_key(keyring):
    plain = Results(None, None).keep([1, 2], "json", 100, "r", "n", 1)
    assert plain.text == "[1, 2]" and plain.ref is None
    with pytest.raises(OutputError, match="result_max_bytes"):
        Results(None, None).keep("x" * 200, "json", 100, "r", "n", 1)
    sealed = Results(None, keyring).keep("marker", "json", 100, "r", "n", 1)
    assert "marker" not in sealed.text and Results(None, keyring).load(sealed) == "marker"
    with pytest.raises(ResultError, match="no encryption_key"):
        Results(None, None).load(sealed, "n")


def test_a_long_error_and_the_start_the_task_row_keeps_are_both_sealed(keyring):
    from qflow.core.outcomes import storable
    from qflow.core.records import Outcome
    results = Results(None, keyring)
    error = "ValueError: " + "marker " * 1000
    sealed = results.seal_outcome(storable(Outcome("failed", error=error), 64 * 1024))
    assert "marker" not in sealed.error and "marker" not in sealed.short_error
    assert results.reveal(sealed.error) == error
    assert results.reveal(sealed.short_error).startswith(error[:2048] + " … (truncated")


def test_a_missing_store_directory_is_reported_by_check(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_store(f"file://{tmp_path}/nowhere").check()
    with pytest.raises(UserError, match="must be a URL"):
        open_store("/srv/results")


def test_fsspec_urls_are_served_through_fsspec(keyring):
    pytest.importorskip("fsspec")
    results = Results(open_store("memory://qflow-test"), keyring)
    results.check()
    stored = results.keep(list(range(1000)), "json", 10, "runA", "n", 1)
    assert stored.ref["url"].startswith("memory://qflow-test/runA/")
    assert results.load(stored) == list(range(1000))
    results.forget_run("runA")
    with pytest.raises(ResultError, match="missing"):
        results.load(stored, "n")


def test_forgetting_a_run_deletes_its_objects_recorded_or_not(store_dir, keyring):
    results = Results(open_store(f"file://{store_dir}"), keyring)
    kept = results.keep(1, "json", 10, "runA", "a", 1)
    orphan = results.keep(2, "json", 10, "runA", "b", 1)     # never recorded in the DB
    other = results.keep(3, "json", 10, "runB", "a", 1)
    results.forget_run("runA")
    assert not object_path(kept).exists() and not object_path(orphan).exists()
    assert results.load(other) == 3


# -- secret parameters ------------------------------------------------------------------
def test_secret_parameters_are_sealed_masked_and_opened(keyring):
    def body(token: Secret[str], day: str = "d"):
        pass
    params = params_of(body)
    assert params["token"].describe() == "Secret[str]"
    with pytest.raises(ParamError, match="set encryption_key"):
        secrets.seal_params(params, {"token": "marker", "day": "d"}, Results(None, None), "w")
    results = Results(None, keyring)
    stored = secrets.seal_params(params, {"token": "marker", "day": "d"}, results, "w")
    assert "marker" not in json.dumps(stored) and stored["day"] == "d"
    from qflow.core.params import masked
    assert masked(stored) == {"token": "***", "day": "d"}
    opened = secrets.open_params(stored, results)
    assert opened == {"token": "marker", "day": "d"}
    shown = secrets.for_context(stored, opened)
    assert str(shown["token"]) == "***" and shown["token"].get() == "marker"


# -- the embedded default, through the CLI -------------------------------------------------
def qflow(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qflow", *args], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120, env=qflow_env(QFLOW_APP=FLOWS, **env))


def test_keygen_prints_a_key_that_encrypts(tmp_path):
    out = qflow(tmp_path, "keygen")
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    assert crypto.Keyring([key]).open(crypto.Keyring([key]).seal("x")) == "x"


def test_a_secret_without_a_key_is_refused_and_nothing_is_recorded(tmp_path):
    out = qflow(tmp_path, "run", "box", "-p", "token=marker-7")
    assert out.returncode == 2
    assert "is a Secret: set encryption_key" in out.stderr
    assert "Traceback" not in out.stderr and "marker-7" not in out.stderr
    assert not (tmp_path / "qflow.db").exists() or "marker-7" not in (
        tmp_path / "qflow.db").read_bytes().decode(errors="ignore")


def test_embedded_run_with_store_and_key_shows_secrets_masked_and_results_in_clear(
        tmp_path, store_dir):
    env = dict(QFLOW_RESULT_STORE=f"file://{store_dir}",
               QFLOW_ENCRYPTION_KEY=crypto.new_key())
    out = qflow(tmp_path, "run", "mapped_squares", "-p", "n=4", **env)
    assert out.returncode == 0, out.stderr
    run_id = run_id_in(out.stdout)
    out = qflow(tmp_path, "result", run_id, "square", "--json", **env)
    assert json.loads(out.stdout)["value"] == [0, 1, 4, 9]
    assert qflow(tmp_path, "result", run_id, **env).stdout.strip() == "14"
    out = qflow(tmp_path, "run", "box", "-p", "token=marker-9", **env)
    assert out.returncode == 1                  # explode raised, as it should
    status = json.loads(qflow(tmp_path, "runs", "--json", **env).stdout)[0]
    assert status["params"] == {"token": "***"}
    db = (tmp_path / "qflow.db").read_bytes()
    assert b"marker-9" not in db
    assert all(b"marker-9" not in p.read_bytes() for p in store_dir.rglob("*") if p.is_file())
    logs = qflow(tmp_path, "logs", status["run_id"], **env)
    assert "printed marker-9" in logs.stdout and "raised marker-9" in logs.stdout
    echoed = qflow(tmp_path, "result", status["run_id"], "echo", **env)
    assert echoed.stdout.strip() == "marker-9"


# -- real workers on Redis and PostgreSQL -------------------------------------------------
@pytest.fixture(scope="module")
def store_cluster(redis_url, pg_server_url, tmp_path_factory):
    """Two single-process workers sharing a result store and a key: w1 serves big_a, w2
    big_b (so a value made on one is read on the other), both the default queue."""
    from conftest import Cluster, new_pg_database
    folder = tmp_path_factory.mktemp("store-cluster")
    (folder / "results").mkdir()
    c = Cluster(redis_url.rsplit("/", 1)[0] + "/2",        # a Redis DB of its own
                new_pg_database(pg_server_url), FLOWS, folder,
                QFLOW_RESULT_STORE=f"file://{folder}/results",
                QFLOW_ENCRYPTION_KEY=crypto.new_key())
    subprocess.run(["qflow", "db", "upgrade"], env=c.env, check=True, capture_output=True)
    c.start_worker("w1", "-Q", "default,big_a", "-c", "1")
    c.start_worker("w2", "-Q", "default,big_b", "-c", "1")
    try:
        c.wait_ready()
        yield c
    finally:
        c.stop()


def cluster_runtime(c):
    from qflow.config import Config
    from qflow.runtime import Runtime
    return Runtime(Config(broker_url=c.broker_url, database_url=c.database_url, app=c.app,
                          result_store=c.env["QFLOW_RESULT_STORE"],
                          encryption_key=c.env["QFLOW_ENCRYPTION_KEY"],
                          wait_poll_interval=0.1))


def pool_peaks_mb(c, name: str) -> list[float]:
    """VmHWM of each pool process of worker ``name``."""
    main = c.workers[name].pid
    children = Path(f"/proc/{main}/task/{main}/children").read_text().split()
    out = []
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out.append(int(line.split()[1]) / 1024)
    return out


def test_a_200_mb_value_passes_between_workers_within_3x_its_size_of_memory(store_cluster):
    import result_flows  # noqa: F401 - registers the workflows here too
    rt = cluster_runtime(store_cluster)
    before = {n: max(pool_peaks_mb(store_cluster, n)) for n in ("w1", "w2")}
    run_id = rt.engine.trigger("big", {"mb": 200})
    run = rt.engine.wait(run_id, timeout=300)
    assert run["state"] == "succeeded", run
    with rt.store.read() as conn:
        from qflow.store import read
        got = read.results(conn, run_id, ["measure"])["measure"]
        ref = json.loads(conn.exec_driver_sql(
            "select result_ref from qflow_tasks where run_id = %s and node = 'make_big'",
            (run_id,)).scalar())
    assert got["length"] == 200 * 1024 * 1024
    assert ref["size"] > 200 * 1024 * 1024 and ref["encrypted"]
    after = {n: max(pool_peaks_mb(store_cluster, n)) for n in ("w1", "w2")}
    print(f"\npeak RSS of the pool processes before {before} and after {after} (MB); "
          f"the reader measured {got['peak_mb']:.0f} MB in its task")
    assert got["peak_mb"] < 3 * 200
    assert after["w1"] < 3 * 200 and after["w2"] < 3 * 200


def test_a_changed_object_fails_the_task_that_reads_it_in_one_line(store_cluster):
    import result_flows  # noqa: F401
    rt = cluster_runtime(store_cluster)
    run_id = rt.engine.trigger("pickled", {"n": 10})
    assert rt.engine.wait(run_id, timeout=60)["state"] == "succeeded"
    with rt.store.read() as conn:
        ref = json.loads(conn.exec_driver_sql(
            "select result_ref from qflow_tasks where run_id = %s and node = 'make_set'",
            (run_id,)).scalar())
    from urllib.parse import unquote, urlsplit
    path = Path(unquote(urlsplit(ref["url"]).path))
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x01
    path.write_bytes(bytes(data))
    rt.engine.resume(run_id, "total")
    run = rt.engine.wait(run_id, timeout=60)
    assert run["state"] == "failed"
    with rt.store.read() as conn:
        from qflow.store import read
        task = {t["node"]: t for t in read.get_run(conn, run_id)["tasks"]}["total"]
    assert task["state"] == "failed" and task["attempts"] == 2
    assert "cannot read the result of 'make_set'" in task["error"]
    assert "\n" not in task["error"]


def test_a_wrong_key_fails_clearly_and_a_missing_store_stops_the_worker_at_start(
        store_cluster, tmp_path):
    import result_flows  # noqa: F401
    rt = cluster_runtime(store_cluster)
    run_id = rt.engine.trigger("mapped_squares", {"n": 3})
    assert rt.engine.wait(run_id, timeout=60)["state"] == "succeeded"
    env = dict(store_cluster.env, QFLOW_ENCRYPTION_KEY=crypto.new_key())
    out = subprocess.run(["qflow", "result", run_id, "numbers"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "not in encryption_key" in out.stderr and len(out.stderr.splitlines()) == 1
    right = subprocess.run(["qflow", "result", run_id, "numbers"], env=store_cluster.env,
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert json.loads(right.stdout) == [0, 1, 2]
    env = dict(store_cluster.env, QFLOW_RESULT_STORE=f"file://{tmp_path}/missing")
    worker = subprocess.run(["qflow", "worker", "-n", "w9@%h"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert worker.returncode == 2
    assert "does not exist" in worker.stderr and "Traceback" not in worker.stderr
