"""The tables of `status`, `runs`, `workflows` and `pools` read the same whether rich lays
them out or qflow.cli.tables.Grid does (off a terminal, for cells of one line of characters
one column wide each)."""
from __future__ import annotations

import random

import pytest
from rich.table import Table

from qflow.cli import tables

CELLS = ["", "x", "succeeded", "w1@host", "a b  c", "ValueError: boom …", "日本語",
         "tab\there", "two\nlines", "\x1b[31mred", "e\u0301", "-" * 300, "[bold]markup[/]"]


def both(headers: tuple[str, ...], rows: list[list[str]], flexible=()) -> tuple[str, str]:
    """The text of the same table drawn by Grid and by rich's Table (as grid() sets it
    up), off a terminal."""
    fast = tables.grid(headers, flexible)
    slow = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 2, 0, 0),
                 header_style="bold")
    for header in headers:
        slow.add_column(header, no_wrap=header not in set(flexible), overflow="ellipsis")
    for row in rows:
        fast.add_row(*(tables.cut(c) if i % 2 else c for i, c in enumerate(row)))
        slow.add_row(*(tables.cut(c) if i % 2 else c for i, c in enumerate(row)))
    return tables.to_text(fast), tables.to_text(slow)


@pytest.mark.parametrize("seed", range(40))
def test_a_grid_reads_as_richs_table_for_any_cells(seed):
    rng = random.Random(seed)
    headers = tuple(f"H{i}" * rng.randint(1, 3) for i in range(rng.randint(1, 6)))
    pool = CELLS[:6] if seed % 2 else CELLS        # half of them all one column a character
    rows = [[rng.choice(pool) for _ in headers] for _ in range(rng.randint(0, 12))]
    fast, slow = both(headers, rows, flexible=headers[-1:])
    assert fast == slow


def test_a_grid_wider_than_the_page_is_richs_to_cut():
    fast, slow = both(("A", "B"), [["x" * 6000, "y" * 6000]], flexible=("B",))
    assert fast == slow and "…" in fast


def test_the_status_table_of_a_big_run_reads_as_richs():
    run = {"run_id": "r" * 32, "workflow": "w", "state": "succeeded", "params": {"n": 1},
           "created_at": "2026-11-30T10:00:00+00:00", "started_at": None, "finished_at": None,
           "tasks": [{"node": f"leaf[{i}]", "state": "failed" if i % 7 else "succeeded",
                      "attempts": i % 3, "started_at": None, "finished_at": None,
                      "worker": f"w{i % 4}@host" if i % 5 else None,
                      "celery_id": f"{i:032x}", "error": "boom\nmore" if i % 7 else None}
                     for i in range(300)]}
    fast = tables.to_text(tables.status_table(run))
    tables.Grid.__rich_console__ = tables.Table.__rich_console__
    try:
        slow = tables.to_text(tables.status_table(run))
    finally:
        del tables.Grid.__rich_console__
    assert fast == slow and fast.count("\n") > 300
