"""Screenshots of the web console for the README: a run page (graph and Gantt) and a
workflow's grid, taken in headless Chromium from a `qflow web` serving a demo run.

    python docs/screenshots.py          # writes docs/console-run.png, docs/console-grid.png

Needs Debian's chromium and Playwright (pip install playwright). The server uses the
embedded default (SQLite in a temporary folder, an in-process worker), so nothing else
has to run. This file is also the demo's workflow file (`qflow web -A docs/screenshots.py`).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from qflow import task, workflow

DOCS = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("QFLOW_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


# -- the demo workflow -------------------------------------------------------------------
@task
def list_stores(day: str, stores: int) -> list[str]:
    time.sleep(0.3)
    return [f"store-{n:02d}" for n in range(1, stores + 1)]


@task(retries=1, retry_delay=0.2)
def extract_store(store: str, flaky: bool) -> int:
    time.sleep(random.uniform(0.1, 0.5))
    if flaky and store == "store-03" and not os.path.exists(_marker(store)):
        open(_marker(store), "w").close()
        raise ConnectionError(f"{store}: connection reset")      # retried once
    return sum(map(ord, store))


@task
def extract_inventory(day: str) -> int:
    time.sleep(0.8)
    return 4200


@task
def merge(sales: list[int], inventory: int) -> dict:
    time.sleep(0.4)
    return {"sales": sum(sales), "inventory": inventory}


@task
def load_warehouse(totals: dict) -> int:
    time.sleep(0.6)
    return len(totals)


@task
def build_report(totals: dict, loaded: int) -> str:
    if not totals["sales"]:
        raise ValueError("no sales recorded: refusing an empty report")
    time.sleep(0.3)
    return f"{totals['sales']} units"


@task(trigger_rule="all_done")
def notify(report) -> str:
    return f"sent: {report}"


@workflow(schedule="0 17 * * *", timezone="Europe/Paris")
def daily_sales(day: str = "2026-11-20", stores: int = 12, flaky: bool = False):
    counts = extract_store.map(list_stores(day, stores), flaky)
    totals = merge(counts, extract_inventory(day))
    notify(build_report(totals, load_warehouse(totals)))


def _marker(store: str) -> str:
    return os.path.join(os.environ.get("QFLOW_DEMO_DIR", tempfile.gettempdir()),
                        f"qflow-demo-{store}")


# -- taking the pictures -----------------------------------------------------------------
def _call(base: str, method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _run(base: str, params: dict) -> str:
    run_id = _call(base, "POST", "/qflow/api/v1/workflows/daily_sales/runs",
                   {"params": params})["run_id"]
    deadline = time.monotonic() + 120
    while _call(base, "GET", f"/qflow/api/v1/runs/{run_id}")["state"] not in (
            "succeeded", "failed", "canceled"):
        if time.monotonic() > deadline:
            raise SystemExit(f"demo run {run_id} did not end")
        time.sleep(0.3)
    return run_id


def _serve(folder: Path) -> tuple[subprocess.Popen, str]:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("QFLOW_")}
    env.update(QFLOW_APP=str(Path(__file__).resolve()), QFLOW_DEMO_DIR=str(folder),
               QFLOW_DATABASE_URL=f"sqlite:///{folder}/demo.db")
    proc = subprocess.Popen(["qflow", "web", "--port", str(port)], env=env, cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=open(folder / "web.log", "w"))
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            _call(base, "GET", "/qflow/api/v1/workflows")
            return proc, base
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"qflow web did not start:\n{(folder / 'web.log').read_text()}")


def _shoot(base: str, run_id: str) -> None:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900},
                                device_scale_factor=1)
        page.goto(f"{base}/qflow/runs/{run_id}?task=extract_store%5B2%5D")
        page.wait_for_selector("#gantt svg")
        page.click('#dag [data-toggle="extract_store"]')
        page.wait_for_selector('#detail .attempt[data-attempt="2"]')
        page.evaluate("document.querySelector('.notice')?.remove()")
        page.screenshot(path=str(DOCS / "console-run.png"), full_page=True)
        page.goto(f"{base}/qflow/workflows/daily_sales")
        page.screenshot(path=str(DOCS / "console-grid.png"), full_page=True)
        browser.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="qflow-shots-") as tmp:
        folder = Path(tmp)
        proc, base = _serve(folder)
        try:
            random.seed(7)
            _run(base, {"day": "2026-11-18"})
            _run(base, {"day": "2026-11-19", "stores": 0})          # fails: no sales
            run_id = _run(base, {"day": "2026-11-20", "flaky": True})
            _run(base, {"day": "2026-11-21", "stores": 16})
            _shoot(base, run_id)
        finally:
            proc.terminate()
            proc.wait(10)
    print("wrote", DOCS / "console-run.png", "and", DOCS / "console-grid.png")


if __name__ == "__main__":
    sys.exit(main())
