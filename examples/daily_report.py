"""The classic "5 pm transaction report" as a qflow workflow.

Four independent extracts run concurrently and produce small, deterministic pseudo-random
data for the day, a few rows of it deliberately malformed; ``sanitize_and_merge`` drops
those and joins the rest per store and SKU, ``load_warehouse`` writes them idempotently
into a SQLite file and ``build_report`` summarises the day with SQL aggregates::

    qflow -A examples/daily_report.py run daily_report -p day=2026-11-20

With ``-p fingerprint=true`` a last step runs in a container (Docker or Podman, see
examples/README.md): ``fingerprint_report`` hands the report to a busybox image as one
argument and returns its SHA-256 and size. It is off by default, so the example runs on a
machine without a container runtime.

Outside a workflow body every task is a plain function: ``extract_sales("2026-11-20", 4)``.
"""
import hashlib
import random
import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import date
from pathlib import Path
from typing import Any

from qflow import container, task, workflow

Row = dict[str, Any]

SKUS = [f"SKU-{n:03d}" for n in range(1, 13)]
PRICE_CENTS = {sku: 199 + 150 * n for n, sku in enumerate(SKUS)}
BAD_ROW_RATE = 0.05  # share of generated rows that are deliberately malformed

TABLE = "store_sku_daily"
COLUMNS = ("day", "store", "sku", "units_sold", "revenue_cents", "units_returned",
           "refund_cents", "units_shipped", "late_shipments", "on_hand")
SCHEMA = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    day TEXT NOT NULL, store INTEGER NOT NULL, sku TEXT NOT NULL,
    units_sold INTEGER NOT NULL, revenue_cents INTEGER NOT NULL,
    units_returned INTEGER NOT NULL, refund_cents INTEGER NOT NULL,
    units_shipped INTEGER NOT NULL, late_shipments INTEGER NOT NULL,
    on_hand INTEGER,
    PRIMARY KEY (day, store, sku))"""


def _generate(day: str, name: str, stores: int, fields: Callable[[random.Random, str], Row],
              count: tuple[int, int] = (50, 200)) -> list[Row]:
    """Rows for one extract; the same (day, name, stores) always gives the same rows."""
    date.fromisoformat(day)  # a malformed day fails here, not deep inside the load
    if stores < 1:
        raise ValueError(f"stores must be at least 1, got {stores}")
    # hashlib, not hash(): str hashing is salted per process, and workers are processes.
    seed = int.from_bytes(hashlib.sha256(f"{name}:{day}".encode()).digest()[:8], "big")
    rng = random.Random(seed)
    rows = []
    for _ in range(rng.randint(*count)):
        sku = rng.choice(SKUS)
        row = {"store": rng.randint(1, stores), "sku": sku, **fields(rng, sku)}
        if rng.random() < BAD_ROW_RATE:
            _corrupt(rng, row)
        rows.append(row)
    return rows


def _corrupt(rng: random.Random, row: Row) -> None:
    """Damage a row the way real feeds do: a lost SKU, a negative count, a bogus store."""
    fault = rng.choice(("missing_sku", "negative", "bad_store"))
    if fault == "missing_sku":
        del row["sku"]
    elif fault == "negative":
        key = next(k for k, v in row.items() if k not in ("store", "sku") and type(v) is int)
        row[key] = -row[key] - 1
    else:
        row["store"] = rng.choice((0, -1, "n/a"))


def _is_valid(row: Row, counts: tuple[str, ...]) -> bool:
    """A row is usable when it names a store and a SKU and every count is a natural number."""
    def natural(value: Any) -> bool:
        return type(value) is int and value >= 0  # type() rejects bools too
    return (type(row.get("store")) is int and row["store"] >= 1
            and isinstance(row.get("sku"), str) and bool(row["sku"])
            and all(natural(row.get(key)) for key in counts))


@task
def extract_sales(day: str, stores: int = 4) -> list[Row]:
    """Point-of-sale lines: store, sku, quantity and amount in cents."""
    def fields(rng: random.Random, sku: str) -> Row:
        qty = rng.randint(1, 8)
        return {"qty": qty, "amount_cents": qty * PRICE_CENTS[sku]}
    return _generate(day, "sales", stores, fields, count=(150, 200))


@task
def extract_inventory(day: str, stores: int = 4) -> list[Row]:
    """Stock counts taken during the day; the latest count per store/sku wins."""
    return _generate(day, "inventory", stores,
                     lambda rng, sku: {"hour": rng.randint(8, 17), "on_hand": rng.randint(0, 400)})


@task
def extract_fulfillment(day: str, stores: int = 4) -> list[Row]:
    """Online orders shipped from a store, and whether they left late."""
    def fields(rng: random.Random, sku: str) -> Row:
        return {"shipped": rng.randint(1, 4), "late": int(rng.random() < 0.1)}
    return _generate(day, "fulfillment", stores, fields)


@task
def extract_returns(day: str, stores: int = 4) -> list[Row]:
    """Items brought back: quantity and refund in cents."""
    return _generate(day, "returns", stores,
                     lambda rng, sku: {"qty": 1, "refund_cents": PRICE_CENTS[sku]}, count=(50, 80))


@task
def sanitize_and_merge(sales: list[Row], inventory: list[Row],
                       fulfillment: list[Row], returns: list[Row]) -> list[Row]:
    """Drop malformed rows and join the four feeds into one row per (store, sku)."""
    merged: dict[tuple[int, str], Row] = {}
    latest_count: dict[tuple[int, str], int] = {}

    def usable(name: str, rows: list[Row], counts: tuple[str, ...]) -> list[Row]:
        good = [row for row in rows if _is_valid(row, counts)]
        if len(good) < len(rows):
            print(f"{name}: dropped {len(rows) - len(good)} malformed rows of {len(rows)}")
        return good

    def slot(row: Row) -> Row:
        key = (row["store"], row["sku"])
        if key not in merged:
            merged[key] = {"store": key[0], "sku": key[1], "units_sold": 0, "revenue_cents": 0,
                           "units_returned": 0, "refund_cents": 0, "units_shipped": 0,
                           "late_shipments": 0, "on_hand": None}
        return merged[key]

    for row in usable("sales", sales, ("qty", "amount_cents")):
        out = slot(row)
        out["units_sold"] += row["qty"]
        out["revenue_cents"] += row["amount_cents"]
    for row in usable("returns", returns, ("qty", "refund_cents")):
        out = slot(row)
        out["units_returned"] += row["qty"]
        out["refund_cents"] += row["refund_cents"]
    for row in usable("fulfillment", fulfillment, ("shipped", "late")):
        out = slot(row)
        out["units_shipped"] += row["shipped"]
        out["late_shipments"] += row["late"]
    for row in usable("inventory", inventory, ("hour", "on_hand")):
        out = slot(row)
        key = (out["store"], out["sku"])
        if row["hour"] >= latest_count.get(key, -1):
            latest_count[key] = row["hour"]
            out["on_hand"] = row["on_hand"]
    return [merged[key] for key in sorted(merged)]


@task(retries=2, retry_delay=1.0)  # SQLite may be briefly locked by another writer
def load_warehouse(merged: list[Row], day: str, warehouse: str = "warehouse.db") -> dict:
    """Replace the day's rows in the SQLite warehouse; running it twice changes nothing."""
    path = Path(warehouse)
    path.parent.mkdir(parents=True, exist_ok=True)
    insert = (f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) "
              f"VALUES ({', '.join(':' + c for c in COLUMNS)})")
    # closing() closes the file; `with conn` makes delete + insert one transaction, so
    # readers never see the day half-loaded.
    with closing(sqlite3.connect(path, timeout=30)) as conn, conn:
        conn.execute(SCHEMA)
        conn.execute(f"DELETE FROM {TABLE} WHERE day = ?", (day,))
        conn.executemany(insert, [{**row, "day": day} for row in merged])
    return {"day": day, "rows": len(merged), "path": str(path.resolve())}


@task
def build_report(loaded: dict, day: str, warehouse: str = "warehouse.db") -> dict:
    """Summarise the day from the warehouse: revenue, units, returns rate, top SKUs, stores."""
    if loaded.get("day") != day:
        raise ValueError(f"warehouse was loaded for {loaded.get('day')!r}, not {day!r}")
    with closing(sqlite3.connect(warehouse, timeout=30)) as conn:
        rows, sold, revenue, returned, refunds = conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM(units_sold), 0), COALESCE(SUM(revenue_cents), 0),"
            f" COALESCE(SUM(units_returned), 0), COALESCE(SUM(refund_cents), 0)"
            f" FROM {TABLE} WHERE day = ?", (day,)).fetchone()
        top = conn.execute(
            f"SELECT sku, SUM(revenue_cents) AS revenue, SUM(units_sold) FROM {TABLE}"
            f" WHERE day = ? GROUP BY sku ORDER BY revenue DESC, sku LIMIT 3", (day,)).fetchall()
        per_store = conn.execute(
            f"SELECT store, SUM(revenue_cents), SUM(units_sold), SUM(units_returned) FROM {TABLE}"
            f" WHERE day = ? GROUP BY store ORDER BY store", (day,)).fetchall()
    return {
        "day": day,
        "rows": rows,
        "revenue_cents": revenue,
        "refund_cents": refunds,
        "net_revenue_cents": revenue - refunds,
        "units_sold": sold,
        "units_returned": returned,
        "returns_rate": round(returned / sold, 4) if sold else 0.0,
        "top_skus": [{"sku": s, "revenue_cents": r, "units_sold": u} for s, r, u in top],
        "stores": [{"store": s, "revenue_cents": r, "units_sold": u, "units_returned": ret}
                   for s, r, u, ret in per_store],
    }


# A step in a container: {report} (the parent's dict, as JSON) reaches the command as one
# argument, never through a shell of qflow's; the last JSON line printed is the result.
# Braces the command means literally are doubled, as in str.format.
FINGERPRINT_SCRIPT = (
    'printf "%s" "$1" | sha256sum | {{ read -r sum _; '
    'printf \'{{"sha256": "%s", "bytes": %d}}\\n\' "$sum" "${{#1}}"; }}')
fingerprint_report = container(
    "docker.io/library/busybox:1.36", ["sh", "-c", FINGERPRINT_SCRIPT, "sh", "{report}"],
    name="fingerprint_report", timeout=120, retries=1, network="none")


@workflow(name="daily_report")
def daily_report(day: str = "2026-11-20", stores: int = 4, warehouse: str = "warehouse.db",
                 fingerprint: bool = False):
    """Extract four feeds in parallel, clean and join them, load the warehouse, report;
    with ``fingerprint``, hash the report in a container."""
    merged = sanitize_and_merge(
        extract_sales(day, stores),
        extract_inventory(day, stores),
        extract_fulfillment(day, stores),
        extract_returns(day, stores),
    )
    loaded = load_warehouse(merged, day, warehouse)
    report = build_report(loaded, day, warehouse)
    if fingerprint:
        fingerprint_report(report=report)
