"""What a user sees while a run goes on and in the tables: plain lines in a pipe, a live
display on a terminal, colours only where they belong, and task output that cannot steer
the terminal."""
from __future__ import annotations

import datetime as dt
import json
import os
import pty
import re
import select
import subprocess
from pathlib import Path

from conftest import ROOT, qflow_env, run_id_in
from test_cli import qflow

FLOWS = str(ROOT / "tests" / "flows.py")
PLAIN_LINE = re.compile(r"^\[\s*(\d+\.\d\d)s\] (\d+)/(\d+) (\S+): (\w+)(.*)$")
CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

RETRIED = """
from qflow import task, workflow

@task(retries=1, retry_delay=0.4)
def wobbly():
    raise ValueError("always")

@task
def quick():
    return 1

@task
def after(x):
    return x

@workflow
def twice():
    wobbly()
    after(quick())
"""

ESCAPING = """
from qflow import task, workflow

@task
def shouty():
    print("before\\x1b[2J\\x1b]0;pwned\\x07after")
    raise ValueError("red \\x1b[31malert\\x07")

@workflow
def escaping():
    shouty()
"""


def on_terminal(argv: list[str], cwd: Path, **env: str) -> tuple[int, str]:
    """Run ``qflow ARGV`` with a pseudo-terminal as stdout and stderr: exit code, output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(["qflow", *argv], stdout=slave, stderr=slave, cwd=cwd,
                            env=qflow_env(COLUMNS="120", LINES="40", **env))
    os.close(slave)
    seen = b""
    while select.select([master], [], [], 30)[0]:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return proc.wait(30), seen.decode()


def seconds_after(start: str, end: str) -> float:
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


# -- off a terminal -------------------------------------------------------------------------
def test_run_in_a_pipe_prints_each_attempt_once_at_the_time_the_db_recorded_in_order(
        tmp_path):
    (tmp_path / "retried.py").write_text(RETRIED)
    out = qflow("-A", "retried.py", "run", "twice", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "\x1b" not in out.stdout and "\r" not in out.stdout
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("[")]
    events = [PLAIN_LINE.match(ln) for ln in lines]
    assert all(events), lines
    said = [(m[4], m[5] + m[6]) for m in events]
    worker = said[0][1].split(" on ", 1)[1]
    wobbly = [re.sub(r" in \d+\.\d\ds", "", what) for node, what in said if node == "wobbly"]
    assert wobbly == [f"started on {worker}", "retrying (attempt 1 failed)  ValueError: always",
                      f"started (attempt 2) on {worker}", "failed (attempt 2)  ValueError: always"]
    others = [(node, what.split()[0]) for node, what in said if node != "wobbly"]
    assert others == [("quick", "started"), ("quick", "succeeded"), ("after", "started"),
                      ("after", "succeeded")]
    assert len(said) == 8                                    # one line per event, no repeats

    stamps = [float(m[1]) for m in events]
    assert stamps == sorted(stamps)                          # in the order things happened
    done = [int(m[2]) for m in events]
    assert done == sorted(done) and done[-1] == 3 and {int(m[3]) for m in events} == {3}
    at: dict[tuple[str, str], float] = {}                   # the first time each was said
    for (node, what), stamp in zip(said, stamps, strict=True):
        at.setdefault((node, what.split()[0]), stamp)
    assert at["wobbly", "failed"] - at["wobbly", "retrying"] >= 0.35    # the retry delay

    status = json.loads(qflow("status", run_id_in(out.stdout), "--json", cwd=tmp_path).stdout)
    after = next(t for t in status["tasks"] if t["node"] == "after")
    assert abs(at["after", "succeeded"]
               - seconds_after(status["created_at"], after["finished_at"])) <= 0.011
    assert abs(at["after", "started"]
               - seconds_after(status["created_at"], after["started_at"])) <= 0.011


# -- on a terminal --------------------------------------------------------------------------
def screen_lines(text: str) -> list[str]:
    """Each output line as a terminal leaves it: escape sequences gone, and of a line
    redrawn after a carriage return only what was written last."""
    return [CSI.sub("", line).rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]


def test_run_on_a_terminal_keeps_task_output_and_logs_above_its_live_display(tmp_path):
    code, text = on_terminal(["-A", FLOWS, "run", "chatter", "-p", "lines=3"], tmp_path)
    assert code == 0, text
    plain = CSI.sub("", text)
    assert re.search(r"\d/3 done \(\d running", plain)                  # the live display
    assert re.search(r"running chatty(__1)? on \S+ \d+\.\ds", plain)
    lines = screen_lines(text)
    said = [ln for ln in lines if "print" in ln or "warning of" in ln]
    assert not [ln for ln in said if re.search(r"done|running|starting", ln)], said  # above
    assert sum(len(re.findall(r"print \d of attempt \d", ln)) for ln in said) == 2 * 2 * 3
    assert sum(len(re.findall(r"WARNING/\w+\] chatty(__1)? warning", ln)) for ln in said) == 4
    assert any(re.fullmatch(r"\[\s*\d+\.\d\ds\] 3/3 join: succeeded in \d+\.\d\ds", ln)
               for ln in lines), lines
    assert "\x1b[32msucceeded\x1b[0m" in text                             # in green
    assert "succeeded (3/3 tasks" in plain


def test_tables_are_coloured_on_a_terminal_only_and_never_with_no_color(tmp_path):
    out = qflow("-A", FLOWS, "run", "failing", cwd=tmp_path)
    run_id = run_id_in(out.stdout)
    for command in (["status", run_id], ["runs"], ["-A", FLOWS, "workflows"]):
        piped = qflow(*command, cwd=tmp_path)
        assert piped.returncode == 0 and "\x1b" not in piped.stdout, piped.stdout
        code, text = on_terminal(command, tmp_path, NO_COLOR="1")
        assert code == 0 and "\x1b[3" not in text and "\x1b[1m" not in text, text
    status = qflow("status", run_id, cwd=tmp_path).stdout
    assert re.search(r"^  boom\s+failed\s+1\s+[\d.]+s\s+\S+\s+[0-9a-f-]{36}\s+ValueError: 1$",
                     status, re.M), status
    runs = qflow("runs", cwd=tmp_path).stdout.splitlines()
    assert re.fullmatch(r"RUN\s+WORKFLOW\s+STATE\s+TASKS\s+CREATED\s+DURATION", runs[0])
    assert re.fullmatch(rf"{run_id}\s+failing\s+failed\s+4/4\s+[\d-]+ [\d:]+\s+[\d.]+s", runs[1])
    code, text = on_terminal(["status", run_id], tmp_path)
    assert "\x1b[1;31mfailed\x1b[0m" in text and "\x1b[35mupstream_failed" in text


# -- what tasks print cannot steer the terminal ----------------------------------------------
def test_logs_and_status_show_a_tasks_terminal_escapes_as_text(tmp_path):
    (tmp_path / "escaping.py").write_text(ESCAPING)
    out = qflow("-A", "escaping.py", "run", "escaping", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert re.search(r"shouty: failed in \S+  ValueError: red \\x1b\[31malert\\x07$",
                     out.stdout, re.M), out.stdout
    run_id = run_id_in(out.stdout)

    logs = qflow("logs", run_id, "shouty", cwd=tmp_path).stdout
    assert "before\\x1b[2J\\x1b]0;pwned\\x07after" in logs
    assert "-- error: ValueError: red \\x1b[31malert\\x07" in logs
    assert "\x1b" not in logs and "\x07" not in logs
    raw = json.loads(qflow("logs", run_id, "--json", cwd=tmp_path).stdout)
    assert "before\x1b[2J\x1b]0;pwned\x07after" in raw[0]["log"]      # the data is kept

    status = qflow("status", run_id, cwd=tmp_path).stdout
    assert re.search(r"^  shouty\s+failed .*ValueError: red \\x1b\[31malert\\x07$", status,
                     re.M), status
    assert "\x1b" not in status and "\x07" not in status
    code, text = on_terminal(["status", run_id], tmp_path)
    assert "\\x1b[31malert\\x07" in text and "\x07" not in text and "\x1b[31malert" not in text
    code, text = on_terminal(["logs", run_id], tmp_path)
    assert "\\x1b]0;pwned\\x07" in text and "\x07" not in text and "\x1b[2J" not in text


# -- the events themselves ------------------------------------------------------------------
def _task(node: str, state: str, attempts: int, started=None, finished=None, error=None):
    return {"node": node, "state": state, "attempts": attempts, "started_at": started,
            "finished_at": finished, "error": error, "worker": "w1@h"}


def _attempt(node: str, number: int, state: str, started: str, finished: str, error=None):
    return {"node": node, "attempt": number, "state": state, "worker": "w1@h",
            "started_at": started, "finished_at": finished, "error": error}


def test_events_name_each_attempt_and_the_ends_no_attempt_recorded():
    from qflow.cli.events import describe, run_events

    t = "2026-01-01T00:00:0{}+00:00".format
    tasks = [_task("a", "canceled", 1, t(1), t(5)),         # failed once, canceled waiting
             _task("b", "upstream_failed", 0, None, t(4)),  # never ran
             _task("c", "failed", 2, t(2), t(3), "ValueError: no"),
             _task("d", "running", 1, t(6))]
    attempts = [_attempt("a", 1, "failed", t(1), t(2), "IOError: x"),
                _attempt("c", 1, "failed", t(0), t(1), "ValueError: no"),
                _attempt("c", 2, "failed", t(2), t(3), "ValueError: no")]
    said = [(e.node, describe(e)[0]) for e in run_events(tasks, attempts)]
    assert said == [("c", "started"), ("c", "retrying"), ("a", "started"),    # ends first
                    ("a", "retrying"), ("c", "started"), ("c", "failed"),     # at one time
                    ("b", "upstream_failed"), ("a", "canceled"), ("d", "started")]
    ends = [e for e in run_events(tasks, attempts) if e.ends_task]
    assert [e.node for e in ends] == ["c", "b", "a"]          # each task's end counted once
