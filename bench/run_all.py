"""Run every benchmark and (re)write docs/performance.md from the measured figures.

    python bench/run_all.py                    # everything, about 15 minutes on 2 cores
    python bench/run_all.py --quick            # smoke test; writes /tmp/qflow-performance-quick.md
    python bench/run_all.py --only fanout,chain

Each benchmark runs as its own process (``bench/<name>.py --json ...``) with its own
private Redis and PostgreSQL; its output is shown as it runs. Nothing in the document is
typed in by hand except the notes between the ``notes:begin``/``notes:end`` markers, which
are carried over from the previous docs/performance.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

BENCHMARKS = ["expansion", "fanout", "chain", "many_runs", "inprocess", "profile", "variants",
              "web_console"]
DOC = C.ROOT / "docs" / "performance.md"
NOTES_BEGIN, NOTES_END = "<!-- notes:begin -->", "<!-- notes:end -->"
TIMEOUT = {"expansion": 900, "fanout": 1800, "chain": 600, "many_runs": 900, "inprocess": 600,
           "profile": 900, "variants": 900, "web_console": 900}
# The engine before its round trips were cut (the first in-process figures' baseline).
BASELINE = "1b9f1fe"
EXTRA_ARGS = {"inprocess": ["--against", BASELINE]}
# Targets of the benchmarks issue (2 cores, Redis + PostgreSQL, worker -c 2 prefork).
FANOUT_MIN_RATIO = 0.8
CHAIN_MAX_RATIO = 1.5
EXPANSION_MAX_S = 10.0
EXPANSION_MAX_MIB = 1024.0
LINEAR_MAX_EXPONENT = 1.1
# The console's budgets (issue 16): a run page of a map of 10,000 (JSON, first paint), of
# 100,000 (drawn, groups collapsed), a page of the runs list over 100,000 runs.
WEB_JSON_MAX_S = 0.3
WEB_PAINT_MAX_MS = 1000
WEB_BIG_PAGE_MAX_MS = 3000
WEB_LIST_MAX_S = 0.3


def run(name: str, quick: bool, folder: Path, snapshot: str, rev: str) -> dict | None:
    out = folder / f"{name}.json"
    argv = [sys.executable, str(C.BENCH / f"{name}.py"), "--json", str(out),
            *EXTRA_ARGS.get(name, [])]
    env = dict(os.environ, QFLOW_BENCH_SNAPSHOT=snapshot, QFLOW_BENCH_REV=rev)
    if quick:
        argv.append("--quick")
    command = ['python', f'bench/{name}.py'] + (['--quick'] if quick else [])
    C.say(f"\n### {name}: {' '.join(command)}")
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=C.ROOT, timeout=TIMEOUT[name], env=env)
    except subprocess.TimeoutExpired:
        C.say(f"### {name}: gave up after {TIMEOUT[name]} s")
        return None
    took = time.monotonic() - t0
    if proc.returncode != 0 or not out.exists():
        C.say(f"### {name}: failed (exit {proc.returncode})")
        return None
    data = json.loads(out.read_text())
    data["took_s"] = took
    C.say(f"### {name}: done in {took:.0f} s")
    return data


def snapshot(rev: str, folder: Path) -> tuple[str, str]:
    """qflow/ as of ``rev`` (see common.extract); ``worktree`` measures the working tree
    as it is (and may change while this runs)."""
    if rev == "worktree":
        return "", git_revision()
    return C.extract(rev, folder)


def git_revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=C.ROOT, capture_output=True,
                              text=True).stdout.strip()
    rev = git("rev-parse", "--short", "HEAD") or "?"
    if not git("status", "--porcelain", "--", "qflow"):
        return rev
    import hashlib
    diff = git("diff", "HEAD", "--", "qflow") + git("ls-files", "--others", "--", "qflow")
    digest = hashlib.sha1(diff.encode()).hexdigest()[:8]
    return f"{rev} with uncommitted changes under qflow/ (diff {digest})"


def yes(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def runs_note(rows: list[dict]) -> str:
    counts = sorted({r["runs"] for r in rows})
    return "/".join(str(c) for c in counts)


# -- the document --------------------------------------------------------------------
def table(add: Callable[[str], None], header: list[str], rows: Iterable[list],
          left: int = 1) -> None:
    """A Markdown table: the first ``left`` columns aligned left, the others right."""
    add("| " + " | ".join(header) + " |")
    add("|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|")
    for cells in rows:
        add("| " + " | ".join(str(c) for c in cells) + " |")


def failed(add: Callable[[str], None], name: str) -> None:
    add(f"_not measured (bench/{name}.py failed; see its output)_")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def web_console(add: Callable[[str], None], web: dict, targets: list) -> None:
    """The console's section: run pages of big maps, the runs list, and their targets."""
    add(f"`{web['argv']}`: `qflow web` on a private PostgreSQL holding finished maps "
        "(`items -> element.map(items)`, rows written as a map writes them) and ended runs "
        "of three workflows. Medians of repeated requests after a warm one, over loopback "
        "with `urllib` (*best*: the fastest of them, what the shared machine allows when "
        "it leaves the server a core); *server CPU* is the `qflow web` process's user + "
        "system time per request. In the browser: headless Chromium through Playwright, "
        "milliseconds from navigation start (a second visit: the server is warm).")
    add("")
    pages = web["run_pages"]
    table(add, ["map of", "API run JSON, ms", "best, ms", "server CPU, ms", "size (MB)",
                "page's view.json, ms", "size (kB)", "page HTML, ms", "live poll, ms",
                "idle poll, ms"],
          ([f"{r['elements']:,}", ms(r["api_run_json_s"]),
            ms(r["api_run_json_best_s"]) if "api_run_json_best_s" in r else "–",
            f"{r['api_cpu_ms']:.0f}" if r.get("api_cpu_ms") is not None else "–",
            f"{r['api_run_json_bytes'] / 1e6:.1f}", ms(r["view_json_s"]),
            f"{r['view_json_bytes'] / 1e3:.0f}", ms(r["page_html_s"]),
            f"{r['poll_s'] * 1000:.1f}", f"{r['idle_poll_s'] * 1000:.1f}"] for r in pages))
    add("")
    add("A live poll asks for the tasks that changed in the run's last second (ended, "
        "queued, running); its plan: " + "; ".join(
            f"map of {r['elements']:,}: {', '.join(r['poll_plan']) or '?'}" for r in pages)
        + ".")
    add("")
    drawn = [r for r in pages if r.get("browser")]
    if drawn:
        table(add, ["map of", "first paint, ms", "graph drawn, ms", "expand the map, ms",
                    "elements drawn"],
              ([f"{r['elements']:,}", r["browser"]["first_paint_ms"],
                r["browser"]["graph_drawn_ms"], r["browser"]["expand_ms"],
                f"{r['browser']['cells_drawn']:,}"] for r in drawn))
    else:
        add("_no browser figures: Chromium or Playwright was not installed_")
    add("")
    lst = web["runs_list"]
    add(f"Runs list over {lst['runs']:,} runs (keyset paging, 50 a page):")
    add("")
    table(add, ["first page, ms", f"{lst['runs'] // 2:,} runs deep, ms",
                "workflow + state filter, ms", "API, 50 runs, ms"],
          [[f"{lst[k] * 1000:.1f}" for k in ("first_page_s", "deep_page_s", "filtered_s",
                                              "api_runs_50_s")]], left=0)
    for r in (r for r in pages if r["elements"] == 10_000):
        worst = max(r["api_run_json_s"], r["view_json_s"])
        targets.append(("run JSON of a map of 10,000 < 300 ms (API and page)",
                        f"API {ms(r['api_run_json_s'])} ms, view.json "
                        f"{ms(r['view_json_s'])} ms", yes(worst < WEB_JSON_MAX_S)))
        if r.get("browser"):
            paint = r["browser"]["first_paint_ms"]
            targets.append(("run page of a map of 10,000: first paint < 1 s",
                            f"{paint} ms (graph drawn {r['browser']['graph_drawn_ms']} ms)",
                            yes(paint < WEB_PAINT_MAX_MS)))
    for r in (r for r in pages if r["elements"] == 100_000 and r.get("browser")):
        graph = r["browser"]["graph_drawn_ms"]
        targets.append(("run page of a map of 100,000 drawn (groups collapsed) < 3 s",
                        f"{graph} ms", yes(graph < WEB_BIG_PAGE_MAX_MS)))
    if lst["runs"] >= 100_000:
        worst = max(lst[k] for k in ("first_page_s", "deep_page_s", "filtered_s"))
        targets.append((f"runs list over {lst['runs']:,} runs < 300 ms a page",
                        f"slowest page {worst * 1000:.1f} ms", yes(worst < WEB_LIST_MAX_S)))


def render(results: dict[str, dict], machine: dict, started: dt.datetime, took: float,
           load: tuple[str, str], quick: bool, notes: str,
           revisions: tuple[str, str]) -> str:
    L: list[str] = []
    add = L.append
    add("# Performance: qflow next to raw Celery")
    add("")
    add(f"Generated by `python bench/run_all.py{' --quick' if quick else ''}` on "
        f"{started:%Y-%m-%d %H:%M} UTC, measuring qflow at {revisions[0]}; the whole run took "
        f"{took / 60:.1f} minutes. Load average {load[0]} before, {load[1]} after.")
    if revisions[0] != revisions[1]:
        add("")
        add(f"**qflow changed while this ran ({revisions[0]} at the start, {revisions[1]} "
            "at the end): the figures mix both. Run it again.**")
    if quick:
        add("")
        add("**This is a `--quick` smoke run (smaller sizes, one run each): not the figures "
            "to quote.**")
    add("")
    add("The machine is shared: other engineers run test suites on it at the same time, so "
        "the figures are noisy (the raw Celery side moves as much as qflow's). Each case "
        "alternates raw Celery and qflow runs so that load hits both alike, and the ratio "
        "is taken between medians of the same run of the script. Rerun "
        "`python bench/run_all.py` to refresh this page.")
    add("")
    add("## Machine and settings")
    add("")
    table(add, ["", ""], ([k, machine.get(k, "?")] for k in (
        "cpu", "cores", "memory", "virtualisation", "os", "python", "celery", "kombu",
        "sqlalchemy", "psycopg", "redis", "postgresql", "sqlite")), left=2)
    add("")
    workers = {}
    for name in ("fanout", "chain", "many_runs"):
        workers.update((results.get(name) or {}).get("workers", {}))
    add("- Broker: a private `redis-server` (no persistence), the same for both sides "
        "(qflow on db 0, raw Celery on db 1, its results on db 2).")
    add("- Results DB: a private PostgreSQL with its stock durability settings (`fsync` and "
        "`synchronous_commit` on: a task state is on disk when its transaction commits), "
        "or a SQLite file (WAL, `synchronous=NORMAL`, as qflow sets it).")
    if workers:
        add(f"- qflow worker: `{workers.get('qflow', '?')}`, loading `bench/bench_flows.py`.")
        add(f"- raw Celery worker: `{workers.get('raw', '?')}` (`bench/raw_app.py`).")
    q = (results.get("fanout") or {}).get("qflow_settings") or C.qflow_settings()
    events = ("turns on Celery task events (`worker_send_task_events`, `task_send_sent_event`)"
              if q.get("worker_send_task_events") or q.get("task_send_sent_event")
              else "leaves Celery task events off (its default)")
    transport = q.get("broker_transport_options") or {}
    redis = ", uses Redis priority lists" if transport.get("priority_steps") else ""
    if transport.get("ack_emulation") is False:
        redis += (" and turns off the Redis transport's ack emulation (`ack_emulation=False`: "
                  "no copy of each delivered message kept in Redis until its ack; qflow "
                  "recovers lost messages from its DB), where raw Celery keeps kombu's default")
    add("- Both apps: JSON only, `task_acks_late=True`, `worker_prefetch_multiplier=1`, "
        "prefork `-c 2`, log level WARNING (no per-task log lines), gossip/mingle/heartbeat "
        "at Celery's defaults (qflow's app as `qflow.broker.app.make_celery` builds it: "
        f"acks_late={q.get('task_acks_late')}, prefetch={q.get('worker_prefetch_multiplier')}, "
        f"serializer={q.get('task_serializer')}). What differs is what qflow adds: qflow "
        f"ignores Celery results and records every state in its DB, {events}{redis}; the "
        "raw side uses a Redis result backend to know when a group or chain is done.")
    add("- Time is trigger to done: for qflow from `Engine.trigger` until the run row is "
        "terminal (`Engine.wait`, polling every 10 ms), for raw Celery from "
        "`apply_async()` until `.get()` returned. One warm-up per side, then the median of "
        "3 runs; a case that takes longer than its time budget stops after fewer runs "
        "(the *runs* column), so the whole page stays within about 15 minutes.")
    add("")

    targets: list[tuple[str, str, str]] = []

    fan = results.get("fanout")
    add("## Fan-out: one workflow of N independent no-op tasks")
    add("")
    if fan:
        add(f"`{fan['argv']}`")
        add("")
        table(add, ["setup", "N", "raw Celery group, tasks/s", "qflow, tasks/s",
                    "of which trigger (s)", "qflow ÷ raw", "runs"],
              ([r["setup"], f"{r['n']:,}", f"{r['raw_tasks_per_s']:.0f}",
                f"{r['qflow_tasks_per_s']:.0f}", f"{r['qflow_trigger_s']:.2f}",
                f"**{r['ratio']:.2f}×**", r["runs"]] for r in fan["rows"]))
        pg = [r for r in fan["rows"] if r["db"] == "pg"]
        if pg:
            worst = min(pg, key=lambda r: r["ratio"])
            targets.append(("fan-out throughput ≥ 0.8× raw Celery (Redis + PostgreSQL)",
                            ", ".join(f"N={r['n']:,}: {r['ratio']:.2f}×" for r in pg),
                            yes(worst["ratio"] >= FANOUT_MIN_RATIO)))
    else:
        failed(add, "fanout")
    add("")

    ch = results.get("chain")
    add("## Chain: N dependent no-op tasks, each taking the previous one's value")
    add("")
    if ch:
        add(f"`{ch['argv']}`")
        add("")
        table(add, ["setup", "N", "raw Celery chain, ms/hop", "qflow, ms/hop", "qflow ÷ raw",
                    "runs"],
              ([r["setup"], r["n"], f"{r['raw_ms_per_hop']:.2f}", f"{r['qflow_ms_per_hop']:.2f}",
                f"**{r['ratio']:.2f}×**", r["runs"]] for r in ch["rows"]))
        pg = [r for r in ch["rows"] if r["db"] == "pg"]
        if pg:
            r = pg[0]
            targets.append(("chain ≤ 1.5× raw Celery's ms per hop (Redis + PostgreSQL)",
                            f"{r['qflow_ms_per_hop']:.2f} vs {r['raw_ms_per_hop']:.2f} ms: "
                            f"{r['ratio']:.2f}×", yes(r["ratio"] <= CHAIN_MAX_RATIO)))
    else:
        failed(add, "chain")
    add("")

    ex = results.get("expansion")
    add("## Expansion: validate, expand and commit a DAG (no broker)")
    add("")
    if ex:
        add(f"`{ex['argv']}`")
        add("")
        add("Layers of 100 nodes, each node after the first layer taking two values from "
            "the layer above (about 2 edges per node). *validate + expand* is "
            "`resolve_params` + `WorkflowDef.expand` (run the body, build the graph, check "
            "it is acyclic); *commit* is `Store.transact(lifecycle.insert_run, NewRun(…)`, "
            "every task "
            "and edge row in one transaction. Each measurement in a fresh process; peak "
            "RSS is that process's VmHWM (the process starts at about "
            f"{min(r['base_rss_mib'] for r in ex['rows']):.0f} MiB after its imports). "
            "*growth* is k in time ∝ size^k from the previous size (1 = linear).")
        add("")
        table(add, ["DB", "nodes", "edges", "validate + expand (s))", "commit (s)", "total (s)",
                    "µs/node", "peak RSS (MiB)", "growth", "runs"],
              ([r["setup"], f"{r['size']:,}", f"{r['edges']:,}", f"{r['expand_s']:.3f}",
                f"{r['commit_s']:.3f}", f"{r['total_s']:.3f}", f"{r['us_per_node']:.1f}",
                f"{r['peak_rss_mib']:.0f}",
                f"{r['growth_exponent']:.2f}" if "growth_exponent" in r else "–", r["runs"]]
               for r in ex["rows"]))
        biggest = max(r["size"] for r in ex["rows"])
        for r in (r for r in ex["rows"] if r["size"] == biggest):
            targets.append((f"expansion of {biggest:,} nodes < 10 s and < 1 GiB ({r['setup']})",
                            f"{r['expand_s']:.2f} s expand + {r['commit_s']:.2f} s commit = "
                            f"{r['total_s']:.2f} s, {r['peak_rss_mib']:.0f} MiB",
                            yes(r["total_s"] < EXPANSION_MAX_S
                                and r["peak_rss_mib"] < EXPANSION_MAX_MIB)))
        exps = [r["growth_exponent"] for r in ex["rows"] if "growth_exponent" in r]
        if exps:
            targets.append(("cost grows linearly (k ≤ 1.1 between sizes)",
                            ", ".join(f"{r['setup']} →{r['size']:,}: {r['growth_exponent']:.2f}"
                                      for r in ex["rows"] if "growth_exponent" in r),
                            yes(max(exps) <= LINEAR_MAX_EXPONENT)))
    else:
        failed(add, "expansion")
    add("")

    mr = results.get("many_runs")
    add("## Many small runs: diamonds (a → b, c → d) triggered at once")
    add("")
    if mr:
        add(f"`{mr['argv']}`")
        add("")
        add("qflow: one client calls `Engine.trigger` R times in a row, then waits for every "
            "run. Raw Celery: R `chain(a, group(b, c), d)` canvases (a chord on the Redis "
            "backend), then every final result.")
        add("")
        table(add, ["setup", "runs", "raw Celery, runs/s", "qflow, runs/s",
                    "qflow triggering took (s)", "qflow ÷ raw", "runs"],
              ([r["setup"], f"{r['runs_per_case']:,}", f"{r['raw_runs_per_s']:.0f}",
                f"{r['qflow_runs_per_s']:.0f}", f"{r['qflow_trigger_s']:.2f}",
                f"**{r['ratio']:.2f}×**", r["runs"]] for r in mr["rows"]))
    else:
        failed(add, "many_runs")
    add("")

    web = results.get("web_console")
    add("## The web console at size")
    add("")
    if web:
        web_console(add, web, targets)
    else:
        failed(add, "web_console")
    add("")

    add("## Targets")
    add("")
    table(add, ["target", "measured", ""], (list(t) for t in targets), left=3)
    add("")

    prof = results.get("profile")
    add("## Where the time goes")
    add("")
    inp = results.get("inprocess")
    add("### qflow's own cost per task, without Celery")
    add("")
    if inp:
        add(f"`{inp['argv']}`: one process triggers the run on a private PostgreSQL (stock "
            "durability) and executes every task itself through `Engine.execute`: claim, "
            "read inputs, run the no-op, record the outcome, release children, count the "
            "run. No broker, no worker processes. CPU is this process's, plus the "
            "PostgreSQL server's; statements exclude BEGIN/COMMIT.")
        add("")
        table(add, ["qflow", "case", "tasks", "ms/task (wall)", "CPU ms/task, qflow",
                    "CPU ms/task, PostgreSQL", "statements/task", "runs"],
              ([r["rev"], r["case"], f"{r['n']:,}", f"{r['wall_ms']:.2f}", f"{r['cpu_ms']:.2f}",
                f"{r['pg_cpu_ms']:.2f}", f"{r['statements']:.1f}", r["runs"]]
               for r in inp["rows"]), left=2)
    else:
        failed(add, "inprocess")
    add("")
    add("### Profile of the real thing")
    add("")
    if prof:
        add(f"From `{prof['argv']}`: pg_stat_statements on the qflow database, Redis "
            "`INFO commandstats` for each side, and py-spy sampling the qflow worker and "
            "its pool processes (wall clock, idle included; sampling slows the profiled "
            "run). Its raw output:")
        add("")
        add("```")
        L.extend(prof["lines"])
        add("```")
    else:
        failed(add, "profile")
    add("")
    var = results.get("variants")
    add("### What-if: settings qflow hard-codes")
    add("")
    if var:
        add(f"`{var['argv']}`: stock qflow and qflow with some settings changed from outside "
            "(`bench/patched_qflow.py`, nothing under `qflow/` edited), and raw Celery with "
            "Redis set as qflow sets it, side by side on "
            f"Redis + PostgreSQL, alternating with raw Celery (fan-out of {var['n_fanout']:,}: "
            f"{var['raw_tasks_per_s']:.0f} tasks/s; chain of {var['n_chain']}: "
            f"{var['raw_ms_per_hop']:.2f} ms/hop).")
        add("")
        table(add, ["side", "fan-out, tasks/s", "÷ raw", "chain, ms/hop", "÷ raw", "runs"],
              ([r["label"], f"{r['tasks_per_s']:.0f}", f"{r['fanout_ratio']:.2f}×",
                f"{r['ms_per_hop']:.2f}", f"{r['chain_ratio']:.2f}×", r["runs"]]
               for r in var["rows"]))
    else:
        failed(add, "variants")
    add("")
    add(NOTES_BEGIN)
    add(notes.strip("\n") if notes.strip() else
        "_(hand-written reading of the profile goes here; run_all.py keeps it)_")
    add(NOTES_END)
    add("")
    add("## Rerunning")
    add("")
    add("```bash")
    add("pip install -e '.[test,postgres]' py-spy   # redis-server and PostgreSQL binaries "
        "installed, as for the tests")
    add("python bench/run_all.py            # everything; rewrites this page")
    add("python bench/run_all.py --quick    # smoke test, a minute or two; writes "
        "/tmp/qflow-performance-quick.md")
    add("python bench/fanout.py --db pg --n 1000    # one benchmark, one case; --help for "
        "each script's options")
    add("```")
    add("")
    add("Every script starts its own `redis-server` and PostgreSQL on free ports and "
        "removes them afterwards; `--quick` (smaller sizes, one run) and `--repeat N` work "
        "on each; `--max-case-seconds` bounds how long a case keeps repeating.")
    return "\n".join(L) + "\n"


def old_notes(path: Path) -> str:
    if not path.exists():
        return ""
    text = path.read_text()
    if NOTES_BEGIN in text and NOTES_END in text:
        inner = text.split(NOTES_BEGIN, 1)[1].split(NOTES_END, 1)[0]
        if "_(hand-written reading" not in inner:
            return inner
    return ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test: small sizes, one run")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {BENCHMARKS}")
    p.add_argument("--output", default=None,
                   help="where to write the page (default docs/performance.md; with --quick "
                        "/tmp/qflow-performance-quick.md)")
    p.add_argument("--rev", default="HEAD",
                   help="the qflow commit to measure (default HEAD, extracted once so that "
                        "commits landing meanwhile do not mix in); 'worktree' = the working "
                        "tree as it is, uncommitted changes included")
    p.add_argument("--from-json", default=None, metavar="DIR",
                   help="only re-render the page from a previous run's JSON files")
    args = p.parse_args()
    out = Path(args.output) if args.output else (
        Path(tempfile.gettempdir()) / "qflow-performance-quick.md" if args.quick else DOC)
    names = [n.strip() for n in args.only.split(",")] if args.only else BENCHMARKS
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    load_before = load_after = C.loadavg()
    took = 0.0
    rev_start = rev_end = git_revision()
    results: dict[str, dict] = {}
    if args.from_json:
        folder = Path(args.from_json)
        for name in names:
            f = folder / f"{name}.json"
            if f.exists():
                results[name] = json.loads(f.read_text())
        meta = folder / "run_all.json"
        if meta.exists():
            m = json.loads(meta.read_text())
            started = dt.datetime.fromisoformat(m["started"])
            load_before, load_after, took = m["load_before"], m["load_after"], m["took_s"]
            rev_start, rev_end = m.get("rev_start", "?"), m.get("rev_end", "?")
    else:
        folder = Path(tempfile.mkdtemp(prefix="qflow-bench-results-"))
        C.say(f"JSON results go to {folder}")
        src, rev_start = snapshot(args.rev, folder)
        C.say(f"measuring qflow at {rev_start}" + (f" (extracted to {src})" if src else ""))
        for name in names:
            data = run(name, args.quick, folder, src, rev_start)
            if data is not None:
                results[name] = data
        took = time.monotonic() - t0
        load_after = C.loadavg()
        rev_end = git_revision() if not src else rev_start
        if src:
            shutil.rmtree(src, ignore_errors=True)
        (folder / "run_all.json").write_text(json.dumps(dict(
            started=started.isoformat(), load_before=load_before, load_after=load_after,
            took_s=took, rev_start=rev_start, rev_end=rev_end)))
    page = render(results, C.machine(), started, took, (load_before, load_after), args.quick,
                  old_notes(out if out.exists() else DOC), (rev_start, rev_end))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    C.say(f"\nwrote {out} ({took / 60:.1f} minutes)")


if __name__ == "__main__":
    main()
