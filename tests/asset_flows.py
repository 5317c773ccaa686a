"""Workflows of the asset and sensor tests: a producer of warehouse.sales and its
consumer, sensors waiting for a file (one in vain, one in the pool ``gate``), and quick
workflows to run beside them (one in the pool ``gate``)."""
from __future__ import annotations

from qflow import Asset, context, task, workflow
from qflow.sensors import file_exists

sales = Asset("warehouse.sales")
prices = Asset("warehouse.prices")


@task(outlets=[sales])
def load_sales(n: int = 1) -> int:
    return n


@workflow
def produce_sales(n: int = 1):
    load_sales(n)


@task
def refresh() -> str:
    return context().run_id


@workflow(schedule=[sales])
def refresh_dashboard():
    refresh()


@task
def join() -> str:
    return "both"


@workflow(schedule=[sales, prices], name="needs_both")
def needs_both():
    join()


@task.sensor(poke_interval=0.5, timeout=60)
def landed(pattern: str) -> list[str]:
    return file_exists(pattern)


@task.sensor(poke_interval=0.5, timeout=2)
def landed_soon(pattern: str) -> list[str]:
    return file_exists(pattern)


@task
def count(paths: list[str]) -> int:
    return len(paths)


@workflow
def wait_for_file(pattern: str):
    count(landed(pattern))


@workflow
def wait_in_vain(pattern: str):
    count(landed_soon(pattern))


@task
def quick(i: int) -> int:
    return i


@workflow
def quick_flow(i: int = 0):
    quick(i)


@task.sensor(poke_interval=0.5, timeout=60, pool="gate")
def landed_gated(pattern: str) -> list[str]:
    return file_exists(pattern)


@workflow
def wait_gated(pattern: str):
    count(landed_gated(pattern))


@task(pool="gate")
def quick_gated(i: int) -> int:
    return i


@workflow
def quick_gated_flow(i: int = 0):
    quick_gated(i)
