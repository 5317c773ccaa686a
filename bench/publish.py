"""Publishing: messages/s into Redis, and how long `trigger` of a big fan-out takes.

    python bench/publish.py                    # 10,000 messages; triggers of 10k and 100k roots
    python bench/publish.py --quick            # 2,000 messages; a trigger of 10k roots, once
    python bench/publish.py --messages 20000 --roots 10000,100000,1000000

Messages: the same N ``qflow.execute`` messages (N tasks of one run, one queue, qflow's
priorities) published into a private Redis that nobody consumes, by four publishers in
turn, on the same Celery app (qflow's own: JSON, results ignored) in the same process:

- ``celery apply_async loop``: ``apply_async`` per message, as an application would;
- ``apply_async in kombu batch``: the same inside kombu's publish batch on one producer
  (what qflow did before it wrote its own messages);
- ``kombu batch, prebuilt``: kombu's ``Producer.publish`` of one message built once, in
  the batch: what kombu and Redis cost alone, a floor for any publisher over kombu;
- ``qflow``: ``CeleryDispatcher.publish`` (qflow/broker/publish.py).

Every case is checked to have put exactly N messages in the queue, which is emptied
between cases. Cases alternate over the repeats; the median is reported with the ratio
to Celery's apply_async loop.

Trigger: ``Engine.trigger`` of bench_flows.fanout with N roots on a private PostgreSQL
(stock durability) and the same Redis, split into validate+expand (run the body, build
and check the graph), commit (every row in one transaction, roots queued) and publish;
no worker runs, so the messages stay in Redis (its memory is reported). Once with the
default dispatch window (at most that many roots are published, the rest wait in the
DB) and once without one (every root is a message at once); with the window, also the
`qflow trigger` command as a user runs it (a new process: start-up included).
"""
from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as C  # noqa: E402

QUEUE = "bench_publish"


def _dispatches(n: int):
    from qflow.core.records import Dispatch
    run_id = uuid.uuid4().hex
    return [Dispatch(run_id, f"noop__{i}" if i else "noop", 1, QUEUE, "fanout",
                     priority=None) for i in range(n)]


class Cases:
    """The four publishers, on one Celery app and one Redis DB."""

    def __init__(self, broker_url: str):
        from qflow.broker.app import CeleryDispatcher, make_celery
        from qflow.broker.publish import EXECUTE, broker_priority
        from qflow.config import Config
        self.config = Config(broker_url=broker_url)
        self.app = make_celery(self.config, lambda: None)
        self.dispatcher = CeleryDispatcher(self.app, self.config)
        self.task = self.app.tasks[EXECUTE]
        self.priority = broker_priority(broker_url, 0)
        import redis
        self.redis = redis.Redis.from_url(broker_url)

    def _extra(self, item) -> dict:
        return dict(queue=QUEUE, shadow=f"{item.workflow}.{item.node}",
                    priority=self.priority)

    def apply_async_loop(self, items) -> None:
        for item in items:
            self.task.apply_async((item.run_id, item.node, item.attempt), **self._extra(item))

    def apply_async_batch(self, items) -> None:
        with self.app.producer_or_acquire() as producer, producer.batch(1000):
            for item in items:
                self.task.apply_async((item.run_id, item.node, item.attempt),
                                      producer=producer, **self._extra(item))

    def kombu_prebuilt(self, items) -> None:
        import json
        headers = {"lang": "py", "task": "qflow.execute", "id": uuid.uuid4().hex,
                   "argsrepr": "()", "kwargsrepr": "{}", "retries": 0,
                   "timelimit": [None, None]}
        body = json.dumps([[items[0].run_id, items[0].node, 1], {}, {}])
        with self.app.producer_or_acquire() as producer:
            producer.maybe_declare(self.app.amqp.queues[QUEUE])
            with producer.batch(1000):
                for _ in items:
                    producer.publish(body, exchange="", routing_key=QUEUE, headers=headers,
                                     content_type="application/json",
                                     content_encoding="utf-8", priority=self.priority)

    def qflow(self, items) -> None:
        self.dispatcher.publish(items)

    def waiting(self) -> int:
        return self.dispatcher.waiting(QUEUE) or 0

    def empty(self) -> None:
        keys = self.redis.keys(QUEUE + "*")
        if keys:
            self.redis.delete(*keys)


PUBLISHERS = [("celery apply_async loop", "apply_async_loop"),
              ("apply_async in kombu batch", "apply_async_batch"),
              ("kombu batch, prebuilt", "kombu_prebuilt"),
              ("qflow", "qflow")]


def measure_messages(cases: Cases, n: int, reps: int) -> list[dict]:
    cases.empty()
    for _, method in PUBLISHERS:                     # warm-up: connections, declarations
        getattr(cases, method)(_dispatches(50))
        cases.empty()
    times: dict[str, list[float]] = {label: [] for label, _ in PUBLISHERS}
    for rep in range(reps):
        for label, method in PUBLISHERS:
            items = _dispatches(n)
            t0 = time.perf_counter()
            getattr(cases, method)(items)
            seconds = time.perf_counter() - t0
            got = cases.waiting()
            if got != n:
                raise RuntimeError(f"{label}: {got} messages in the queue, expected {n}")
            cases.empty()
            times[label].append(seconds)
            C.say(f"  run {rep + 1} {label:<28} {n / seconds:9,.0f} msg/s  ({seconds:.3f} s)")
    base = C.median(times[PUBLISHERS[0][0]])
    rows = []
    for label, _ in PUBLISHERS:
        med = C.median(times[label])
        rows.append(dict(publisher=label, messages=n, seconds=med, per_s=n / med,
                         vs_apply_async=base / med, runs=times[label]))
        C.say(f"publish {n:,} messages  {label:<28} {n / med:9,.0f} msg/s  "
              f"{med / n * 1e6:6.1f} us/message  {base / med:5.2f}x apply_async loop "
              f"[median of {len(times[label])}]")
    return rows


def measure_trigger(rt, redis_client, roots: int) -> dict:
    """A fan-out of ``roots`` triggered twice: once split into its parts (as
    ``Engine.create_run`` does them), once by ``Engine.trigger`` as a whole."""
    from qflow.engine.client import _insert
    from qflow.store.lifecycle import NewRun
    engine = rt.engine
    redis_client.flushdb()
    before = redis_client.info("memory")["used_memory"]
    wdef = engine.workflow("fanout")
    t0 = time.perf_counter()
    values = wdef.resolve_params({"n": roots})
    graph = wdef.expand(values)
    t1 = time.perf_counter()
    engine.dispatcher.check()
    to_publish = engine.store.transact(_insert, NewRun(uuid.uuid4().hex, graph, values),
                                       None, rt.config.window())[1].to_publish
    t2 = time.perf_counter()
    published = engine.publish(to_publish)
    t3 = time.perf_counter()
    assert published, "the broker refused messages"
    held = engine.dispatcher.waiting(rt.config.default_queue)
    after = redis_client.info("memory")["used_memory"]
    redis_client.flushdb()
    t4 = time.perf_counter()
    engine.trigger("fanout", {"n": roots})
    t5 = time.perf_counter()
    return dict(roots=roots, expand_s=t1 - t0, commit_s=t2 - t1, publish_s=t3 - t2,
                total_s=t3 - t0, in_queue=held, redis_bytes=after - before,
                trigger_s=t5 - t4, published=len(to_publish))


def measure_cli(broker_url: str, database_url: str, roots: int) -> float:
    """`qflow trigger fanout -p n=ROOTS` in a new process: what a user waits for,
    the process's start-up and loading of the workflow file included."""
    import subprocess
    env = C._clean_env(QFLOW_APP=str(C.FLOWS), QFLOW_BROKER_URL=broker_url,
                       QFLOW_DATABASE_URL=database_url)
    t0 = time.perf_counter()
    subprocess.run([C.qflow_bin(), "trigger", "fanout", "-p", f"n={roots}"], env=env,
                   check=True, capture_output=True, cwd=C.ROOT)
    return time.perf_counter() - t0


def runtime(broker_url: str, database_url: str, window: int | None):
    """The client's Runtime; ``window``: its dispatch_window (None: the default)."""
    from qflow.config import Config
    from qflow.loader import load_app
    from qflow.runtime import Runtime
    load_app(str(C.FLOWS))
    extra = {} if window is None else {"dispatch_window": window}
    return Runtime(Config(broker_url=broker_url, database_url=database_url,
                          app=str(C.FLOWS), **extra))


def measure_triggers(s, sizes: list[int], reps: int) -> list[dict]:
    """Each size with the default dispatch window (the trigger publishes at most that
    many roots) and with none (every root is a message at once)."""
    import redis
    url = s.database_url("pg")
    client = redis.Redis.from_url(s.redis_url(0))
    rows = []
    for window in (None, 0):
        rt = runtime(s.redis_url(0), url, window)
        label = (f"window {rt.config.dispatch_window}" if rt.config.dispatch_window
                 else "no window")
        measure_trigger(rt, client, 100)                       # warm-up
        for roots in sizes:
            rows.append(trigger_row(s, rt, client, url, roots, reps, label))
        rt.store.dispose()
    return rows


def trigger_row(s, rt, client, url: str, roots: int, reps: int, label: str) -> dict:
    runs = [measure_trigger(rt, client, roots) for _ in range(1 if roots >= 100_000 else reps)]
    for r in runs:
        C.say(f"  trigger {roots:,} roots ({label}): validate+expand {r['expand_s']:.3f} s, "
              f"commit {r['commit_s']:.3f} s, publish {r['publish_s']:.3f} s "
              f"(sum {r['total_s']:.3f} s); Engine.trigger {r['trigger_s']:.3f} s; "
              f"Redis +{r['redis_bytes'] / 2**20:.1f} MiB for {r['in_queue']:,} messages")
    row = {k: C.median([r[k] for r in runs]) for k in (
        "expand_s", "commit_s", "publish_s", "total_s", "trigger_s", "redis_bytes")}
    row.update(roots=roots, runs=len(runs), window=label, published=runs[0]["published"],
               publish_per_s=runs[0]["published"] / row["publish_s"])
    if roots <= 10_000 and label != "no window":
        client.flushdb()
        row["cli_s"] = C.median([measure_cli(s.redis_url(0), url, roots) for _ in range(reps)])
    C.say(f"trigger {roots:>9,} roots ({label}, PostgreSQL): Engine.trigger "
          f"{row['trigger_s']:.3f} s; parts: validate+expand {row['expand_s']:.3f} + commit "
          f"{row['commit_s']:.3f} + publish {row['published']:,} messages "
          f"{row['publish_s']:.3f} ({row['publish_per_s']:,.0f} msg/s)"
          + (f"; `qflow trigger` command {row['cli_s']:.3f} s" if "cli_s" in row else "")
          + f" [median of {len(runs)}]")
    return row


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=None,
                   help="messages per publisher run (default 10000; 2000 with --quick)")
    p.add_argument("--roots", default=None,
                   help="comma-separated fan-out sizes to trigger (default 10000,100000; "
                        "0: none)")
    args = p.parse_args()
    reps = C.repeats(args)
    n = args.messages or (2000 if args.quick else 10_000)
    sizes = [int(x) for x in (args.roots or ("10000" if args.quick
                                             else "10000,100000")).split(",")
             if x.strip() not in ("", "0")]
    C.say(f"load {C.loadavg()}")
    with C.servers_up(pg=bool(sizes)) as s:
        cases = Cases(s.redis_url(3))
        messages = measure_messages(cases, n, reps)
        triggers = []
        if sizes:
            triggers = measure_triggers(s, sizes, reps)
    C.emit(args, "publish", {"messages": messages, "triggers": triggers,
                             "machine": C.machine()})


if __name__ == "__main__":
    main()
