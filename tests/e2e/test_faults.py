"""Fault tolerance, end to end: nothing the collector acknowledged is lost, nothing is stored twice.

Every test runs a steady OTLP/HTTP load (otlp_load.OtlpLoad: requests of 200 spans with unique span
ids), breaks something in the middle of it, and then compares span ids: what the client sent, what
the collector acknowledged (HTTP 200), and what is in the spans table, counting duplicates. A refused
request (429, 503, no answer) is sent again with the same bytes until it is acknowledged, as an OTLP
client does, so at the end every span sent must be stored exactly once.

The faults: PostgreSQL stopped for 10 s and started again on the same port; PostgreSQL frozen with
SIGSTOP until the exporter core's memory limit refuses data (with the collector's RSS sampled), and
for longer than write_timeout; the collector killed with SIGKILL while a persistent sending queue
holds data, once between a commit and its acknowledgement; connections to PostgreSQL cut mid-COPY
and at the moment of commit (tcp_proxy.PgProxy); malformed and oversized requests mixed into good
traffic, and one valid request larger than the core's memory limit.

These tests run on a PostgreSQL cluster of their own (scripts/pg.sh in a temporary directory, even
when OTELSTORE_PG_DSN is set), because they stop and freeze it.

Each test prints one line of figures ("[reliability] ...", visible with `pytest -s`, and repeated
in a "reliability figures" section at the end of every run) and, when OTELSTORE_RELIABILITY_OUT
names a file, appends them to it as one JSON object per line, with the core's own counters read from
the collector's metrics.
docs/RELIABILITY.md explains the guarantees these tests check and records measured figures.

The collectors here have no `batch` processor: it answers the client before the sending queue has
the data and drops what the exporter refuses, so with it a crash or a full queue loses acknowledged
spans. Batching, where wanted, belongs to the sending queue (`sending_queue.batch`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from conftest import SUMMARY_LINES, Collector, PgCluster, http_post, unique_name
from otlp_load import CONTENT_TYPE, OtlpLoad, build_request
from tcp_proxy import PgProxy

# memory_limiter stays (it refuses at the door, which is safe); batch goes (see the module docstring).
FAULT_PROCESSORS = ["memory_limiter"]

SPANS_PER_REQUEST = 200
MIB = 1024 * 1024


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def pg(own_pg: PgCluster) -> PgCluster:
    """conftest's own_pg (a cluster only these tests use, since they stop and freeze it), running and
    not frozen at the start and at the end of every test."""
    own_pg.resume()
    own_pg.start()
    yield own_pg
    own_pg.resume()
    own_pg.start()


# --------------------------------------------------------------------------- helpers


def exporter_settings(**overrides: Any) -> dict:
    """Exporter keys for a fault test. The exporterhelper retry settings of conftest (200 ms to 1 s
    backoff, 30 s in all) suit every fault here, which all end within 30 s."""
    return overrides


# The core's counters, as the collector's own metrics (go-shim/telemetry.go) name them.
CORE_COUNTERS = {
    "rows_written": "otelstore_rows_written",
    "write_retries": "otelstore_write_retries",
    "duplicate_requests_skipped": "otelstore_requests_duplicate_skipped",
    "requests_refused": "otelstore_requests_refused",
}


def core_counters(collector: Collector) -> dict[str, int]:
    """The core's counters since the collector (process) started; a counter never incremented is
    not exported, and reads 0. The core hands them to the collector every second: call this a
    second or more after the last write."""
    metrics = collector.metrics()
    return {
        key: int(metrics.get(name, metrics.get(name + "_total", 0)))
        for key, name in CORE_COUNTERS.items()
    }


def replayed_from_queue(collector: Collector) -> list[int]:
    """Per restart, how many requests the persistent queue found dispatched to the exporter by the
    previous process and not marked done ("Moved items for dispatching back to queue")."""
    counts = []
    for line in collector.log_path.read_text(errors="replace").splitlines():
        if "Moved items for dispatching back to queue" in line:
            m = re.search(r'"numberOfItems": (\d+)', line)
            counts.append(int(m.group(1)) if m else -1)
    return counts


def add_file_storage(config: dict, workdir: Path) -> None:
    """The file_storage extension, keeping its data in the collector's working directory (so a
    restarted collector finds the queue its killed predecessor left)."""
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    config["extensions"]["file_storage"] = {"directory": str(storage), "timeout": "5s"}
    config["service"]["extensions"].append("file_storage")


class RssSampler:
    """Samples the collector's VmRSS every `interval` seconds (following restarts) in a thread."""

    def __init__(self, collector: Collector, interval: float = 0.2) -> None:
        self.collector = collector
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (monotonic time, KiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> "RssSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            kib = self.collector.rss_kib()
            if kib is not None:
                self.samples.append((time.monotonic(), kib))
            self._stop.wait(self.interval)

    def stop_and_peak(self) -> float | None:
        self.stop()
        return self.peak_mib()

    def peak_mib(self, since: float | None = None, until: float | None = None) -> float | None:
        vals = [k for t, k in self.samples if (since is None or t >= since) and (until is None or t < until)]
        return round(max(vals) / 1024, 1) if vals else None


def table_count(dsn: str, table: str) -> int:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SET statement_timeout = '20s'")
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return 0


def wait_rows(dsn: str, table: str, at_least: int, timeout: float, settle: float = 2.0) -> float:
    """Waits (bounded) until the table holds at least `at_least` rows, then `settle` seconds more
    (for late duplicates to show). Returns when (monotonic) the count got there, or gave up."""
    deadline = time.monotonic() + timeout
    count = table_count(dsn, table)
    while count < at_least and time.monotonic() < deadline:
        time.sleep(0.2)
        count = table_count(dsn, table)
    reached = time.monotonic()
    time.sleep(settle)
    return reached


def stored_span_ids(dsn: str, table: str, where: str = "TRUE", params: Any = None) -> list[bytes]:
    """Every stored span id, once per row (a duplicate appears twice)."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SET statement_timeout = '60s'")
            return [bytes(r[0]) for r in conn.execute(f"SELECT span_id FROM {table} WHERE {where}", params)]
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return []


def report(name: str, load: OtlpLoad, stored: list[bytes], **extra: Any) -> dict:
    """Compares what was sent, acknowledged and stored; prints one line and appends the figures to
    $OTELSTORE_RELIABILITY_OUT (JSON lines). Returns the figures."""
    sent = load.sent_span_ids()
    acked = load.acked_span_ids()
    counts = Counter(stored)
    stored_set = set(counts)
    retried = load.retried_request_nos()

    def request_no(span_id: bytes) -> int:
        return int.from_bytes(span_id[3:], "big") // load.spans_per_request

    dup_ids = [s for s, n in counts.items() if n > 1]
    summary = load.summary()
    figures = {
        "test": name,
        "spans_sent": len(sent),
        "spans_acked": len(acked),
        "rows_stored": len(stored),
        "spans_stored": len(stored_set),
        "duplicates": sum(counts[s] - 1 for s in dup_ids),
        # Extra copies of spans whose request the client sent only once: the server's doing.
        "duplicates_single_send": sum(counts[s] - 1 for s in dup_ids if request_no(s) not in retried),
        "missing_acked": len(acked - stored_set),
        "missing_sent": len(sent - stored_set),
        "stored_unacked": len(stored_set - acked),
        "foreign": len(stored_set - sent),
        "requests": summary["requests"],
        "requests_retried": len(retried),
        "attempts": summary["attempts"],
        "statuses": summary["statuses"],
        "client_errors": summary["client_errors"],
        **extra,
    }
    line = (
        f"[reliability] {name}: sent={figures['spans_sent']} acked={figures['spans_acked']} "
        f"stored={figures['rows_stored']} (distinct {figures['spans_stored']}) "
        f"duplicates={figures['duplicates']} missing={figures['missing_acked']} "
        f"requests={figures['requests']} attempts={figures['attempts']} statuses={figures['statuses']}"
    )
    for key in ("peak_rss_mib", "baseline_rss_mib", "duration_s"):
        if key in extra:
            line += f" {key}={extra[key]}"
    emit(line, figures)
    return figures


def emit(line: str, figures: dict) -> None:
    """Prints the summary line (and has conftest repeat it at the end of the run, where it shows
    even without -s); appends the figures to $OTELSTORE_RELIABILITY_OUT as a JSON line."""
    print(line, flush=True)
    SUMMARY_LINES.append(line)
    out = os.environ.get("OTELSTORE_RELIABILITY_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **figures}) + "\n")


def assert_exactly_once(fig: dict, all_acked: bool, collector: Collector) -> None:
    context = f"{json.dumps(fig)}\n{collector.describe()}"
    assert all_acked, f"some requests were never acknowledged, even retried to the end\n{context}"
    assert fig["spans_acked"] == fig["spans_sent"], context
    assert fig["foreign"] == 0, f"rows that no one sent\n{context}"
    assert fig["missing_acked"] == 0, f"acknowledged spans missing from the database\n{context}"
    assert fig["duplicates"] == 0, f"spans stored more than once\n{context}"
    assert fig["rows_stored"] == fig["spans_sent"], context


def finish_and_count(load: OtlpLoad, pg_dsn: str, collector: Collector, timeout: float = 45) -> tuple[bool, list[bytes], float]:
    """Stops the load, retries until everything is acknowledged (at most `timeout` s), waits until it
    is stored (at most `timeout` s more). Returns (all acknowledged, stored span ids, seconds from
    the first request until the table held as many rows as spans were acknowledged)."""
    all_acked = load.finish(timeout=timeout)
    reached = wait_rows(pg_dsn, collector.spans_table, len(load.acked_span_ids()), timeout=timeout)
    duration = round(reached - (load.started_at or 0), 1)
    return all_acked, stored_span_ids(pg_dsn, collector.spans_table), duration


# --------------------------------------------------------------------------- 2. database restart


def test_database_stopped_10s_under_load(pg: PgCluster, start_collector):
    """PostgreSQL goes away for 10 s (fast shutdown: sessions and COPYs in flight are cut) and comes
    back on the same port. The sending queue holds what arrives meanwhile; the exporter retries. The
    health check reports the outage and the recovery."""
    c = start_collector(dsn=pg.dsn, processors=FAULT_PROCESSORS)
    rss = RssSampler(c).start()
    load = OtlpLoad(c.traces_url, unique_name("dbstop"), rate=20, spans_per_request=SPANS_PER_REQUEST).start()
    unhealthy_after = healthy_again_after = None
    try:
        time.sleep(3)
        t_down = time.monotonic()
        pg.stop()
        # The health check turns 500 once writes have failed for its recovery_duration (5 s).
        while time.monotonic() - t_down < 10:
            if unhealthy_after is None and not c.healthy():
                unhealthy_after = round(time.monotonic() - t_down, 1)
            time.sleep(0.5)
        pg.start()
        t_up = time.monotonic()
        # ...and 200 again after the next successful write.
        while time.monotonic() - t_up < 15 and healthy_again_after is None:
            if c.healthy():
                healthy_again_after = round(time.monotonic() - t_up, 1)
            time.sleep(0.5)
        time.sleep(max(0.0, 4 - (time.monotonic() - t_up)))
    finally:
        all_acked, stored, duration = finish_and_count(load, pg.dsn, c)
    fig = report(
        "database_stopped_10s", load, stored, duration_s=duration,
        db_down_s=round(t_up - t_down, 1), statuses_while_down=dict(load.statuses(t_down, t_up)),
        health_500_after_s=unhealthy_after, health_200_again_after_s=healthy_again_after,
        core=core_counters(c), peak_rss_mib=rss.stop_and_peak(),
    )
    assert c.alive(), c.describe()
    assert unhealthy_after is not None, f"the health check stayed 200 for 10 s with the database down\n{c.describe()}"
    assert healthy_again_after is not None, f"the health check was not 200 within 15 s of the database's return\n{c.describe()}"
    assert_exactly_once(fig, all_acked, c)


# --------------------------------------------------------------------------- 3. database frozen


# The bound on the collector's RSS while PostgreSQL is frozen: its RSS before the load, plus the
# core's memory limit, plus room for the Go side (the sending queue, the export calls under way, the
# receiver's request buffers, garbage not yet collected). Measured: see docs/RELIABILITY.md.
MEMORY_LIMIT_MIB = 16
RSS_MARGIN_MIB = 160
CONSUMERS = 24
# What the core says when it refuses data for its memory limit (rust/core/src/error.rs MemoryLimit);
# exporterhelper logs it with every retry.
MEMORY_LIMIT_MESSAGE = "memory limit reached"


@pytest.mark.parametrize("acknowledge", ["committed", "accepted"])
def test_database_frozen_until_memory_limit(acknowledge: str, pg: PgCluster, start_collector):
    """PostgreSQL is frozen with SIGSTOP (postmaster and backends: connections stay open, every COPY
    hangs) until the core's memory limit makes it refuse data and the small sending queue passes the
    refusals on to the client. Then SIGCONT. RSS is sampled every 200 ms throughout.

    committed: each export call waits in the core for its commit, so the core holds what the queue's
    consumers handed it (here more than the limit). accepted: export calls return as soon as the
    core holds the data, so only the limit stops the core from taking in everything. Either way
    the collector is not killed here, so everything acknowledged must be stored."""
    c = start_collector(
        dsn=pg.dsn,
        processors=FAULT_PROCESSORS,
        exporter_overrides=exporter_settings(
            acknowledge=acknowledge,
            memory_limit_mib=MEMORY_LIMIT_MIB,
            # Enough concurrent export calls (~1 MiB each) to overfill the core's 16 MiB, and a queue
            # that holds little more than they do (queue_size counts the requests being exported
            # too), so that once they are all waiting the client is refused.
            sending_queue={"enabled": True, "num_consumers": CONSUMERS, "queue_size": CONSUMERS + 4,
                           "sizer": "requests"},
            retry_on_failure={"enabled": True, "initial_interval": "100ms", "max_interval": "500ms",
                              "max_elapsed_time": "60s"},
        ),
    )
    rss = RssSampler(c).start()
    time.sleep(1.0)
    baseline = rss.peak_mib()
    # ~1 MiB requests: 200 spans with a 5000-byte attribute each.
    load = OtlpLoad(c.traces_url, unique_name("dbfreeze"), rate=8, spans_per_request=SPANS_PER_REQUEST,
                    pad=5000, concurrency=4).start()
    t_freeze = t_thaw = None
    refused_seen_at = limit_seen_at = None
    try:
        time.sleep(3)
        t_freeze = time.monotonic()
        pg.pause()
        # Frozen until the core has refused data for its memory limit and the client has been
        # refused for 3 s; at most 20 s (under write_timeout, 30 s, so no COPY attempt times out).
        deadline = t_freeze + 20
        while time.monotonic() < deadline:
            now = time.monotonic()
            refused = sum(n for s, n in load.statuses(since=t_freeze).items() if s in (429, 503))
            if refused and refused_seen_at is None:
                refused_seen_at = now
            if limit_seen_at is None and MEMORY_LIMIT_MESSAGE in c.log():
                limit_seen_at = now
            if refused_seen_at is not None and limit_seen_at is not None and now - max(refused_seen_at, limit_seen_at) >= 3:
                break
            time.sleep(0.2)
        pg.resume()
        t_thaw = time.monotonic()
        time.sleep(3)
    finally:
        pg.resume()
        all_acked, stored, duration = finish_and_count(load, pg.dsn, c, timeout=60)
        rss.stop()
    peak = rss.peak_mib()
    peak_frozen = rss.peak_mib(t_freeze, t_thaw)
    while_frozen = load.statuses(t_freeze, t_thaw)
    bound = (baseline or 0) + MEMORY_LIMIT_MIB + RSS_MARGIN_MIB
    fig = report(
        f"database_frozen_memory_limit_{acknowledge}", load, stored, duration_s=duration,
        baseline_rss_mib=baseline, peak_rss_mib=peak, peak_rss_frozen_mib=peak_frozen,
        rss_bound_mib=bound, memory_limit_mib=MEMORY_LIMIT_MIB,
        frozen_s=round((t_thaw or 0) - (t_freeze or 0), 1),
        first_refusal_after_s=round(refused_seen_at - t_freeze, 1) if refused_seen_at else None,
        memory_limit_hit_after_s=round(limit_seen_at - t_freeze, 1) if limit_seen_at else None,
        statuses_while_frozen=dict(while_frozen), core=core_counters(c),
    )
    assert c.alive(), c.describe()
    assert fig["core"]["requests_refused"] > 0 or limit_seen_at is not None, (
        f"the core never refused data for its memory limit\n{c.describe()}"
    )
    assert limit_seen_at is not None, (
        f"the core never refused data for its memory limit ({MEMORY_LIMIT_MESSAGE!r} not in the log)"
        f" while PostgreSQL was frozen for {fig['frozen_s']} s\n{c.describe()}"
    )
    refusals = while_frozen[429] + while_frozen[503]
    assert refusals > 0, f"the client was never refused while PostgreSQL was frozen: {dict(while_frozen)}\n{c.describe()}"
    assert peak is not None and peak <= bound, (
        f"peak RSS {peak} MiB above the bound {bound} MiB (baseline {baseline} + limit {MEMORY_LIMIT_MIB}"
        f" + margin {RSS_MARGIN_MIB})\n{json.dumps(fig)}"
    )
    assert_exactly_once(fig, all_acked, c)


WRITE_TIMEOUT_MESSAGE = "a write attempt took longer than"  # rust/core/src/error.rs WriteTimeout


def test_database_frozen_longer_than_write_timeout(pg: PgCluster, start_collector):
    """PostgreSQL is frozen for 8 s with write_timeout at 2 s: the core abandons the hanging COPYs
    (their connections are dropped) and retries. The abandoned transactions may still commit when
    PostgreSQL wakes up; their request ids make the retries skip what they stored."""
    c = start_collector(
        dsn=pg.dsn,
        processors=FAULT_PROCESSORS,
        exporter_overrides=exporter_settings(write_timeout="2s"),
    )
    rss = RssSampler(c).start()
    load = OtlpLoad(c.traces_url, unique_name("wtimeout"), rate=20, spans_per_request=SPANS_PER_REQUEST).start()
    try:
        time.sleep(3)
        t_freeze = time.monotonic()
        pg.pause()
        time.sleep(8)
        pg.resume()
        t_thaw = time.monotonic()
        time.sleep(4)
    finally:
        pg.resume()
        all_acked, stored, duration = finish_and_count(load, pg.dsn, c)
    timeouts = c.log_path.read_text(errors="replace").count(WRITE_TIMEOUT_MESSAGE)
    fig = report(
        "database_frozen_past_write_timeout", load, stored, duration_s=duration,
        frozen_s=round(t_thaw - t_freeze, 1), write_timeout_s=2, write_timeouts_logged=timeouts,
        statuses_while_frozen=dict(load.statuses(t_freeze, t_thaw)), core=core_counters(c),
        peak_rss_mib=rss.stop_and_peak(),
    )
    assert c.alive(), c.describe()
    assert timeouts > 0, f"no write attempt timed out ({WRITE_TIMEOUT_MESSAGE!r} not in the log)\n{c.describe()}"
    assert_exactly_once(fig, all_acked, c)


# --------------------------------------------------------------------------- 4. collector crash


def test_collector_sigkill_with_persistent_queue(pg: PgCluster, start_collector):
    """The collector is killed with SIGKILL under load and started again with the same file_storage
    directory, three times:

    - plain: under steady load;
    - backlog: PostgreSQL frozen for 2 s first, so the persistent queue holds requests both waiting
      and dispatched to the exporter (COPYs hanging) when the collector dies;
    - committed, not acknowledged: a proxy between the exporter and PostgreSQL holds back the
      server's reply to a COMMIT, and the collector is killed while it waits for it. The rows are
      in the database, but the queue still has the request as dispatched, so the next process
      exports it again: only the core's per-request dedupe keeps it from being stored twice.

    What the collector acknowledged was in the persistent queue, so all of it must be stored, once.
    """
    proxy = PgProxy(upstream_port=int(pg.dsn.rsplit(":", 1)[1].split("/")[0])).start()
    try:
        c = start_collector(
            dsn=proxy.dsn_for(pg.dsn),
            processors=FAULT_PROCESSORS,
            exporter_overrides=exporter_settings(
                sending_queue={"enabled": True, "storage": "file_storage", "num_consumers": 4, "queue_size": 1000},
            ),
            configure=add_file_storage,
        )
        rss = RssSampler(c).start()
        load = OtlpLoad(c.traces_url, unique_name("sigkill"), rate=20, spans_per_request=SPANS_PER_REQUEST).start()
        restarts = []
        held = False
        try:
            time.sleep(3)
            for how in ("plain", "backlog", "committed_not_acknowledged"):
                if how == "backlog":
                    pg.pause()
                    time.sleep(2)
                elif how == "committed_not_acknowledged":
                    proxy.arm_hold_at_commit()
                    held = proxy.held.wait(timeout=10)
                    proxy.disarm()
                t_kill = time.monotonic()
                assert c.kill() == -9
                pg.resume()
                c.start()  # same ports, config and storage directory
                restarts.append((how, t_kill, time.monotonic()))
                time.sleep(3)
        finally:
            pg.resume()
            proxy.disarm()
            all_acked, stored, duration = finish_and_count(load, pg.dsn, c)
        down = Counter()
        for _, t_kill, t_up in restarts:
            down.update(load.statuses(t_kill, t_up))
        fig = report(
            "collector_sigkill_persistent_queue", load, stored, duration_s=duration,
            kills=[how for how, _, _ in restarts], restart_s=[round(up - k, 2) for _, k, up in restarts],
            statuses_while_down=dict(down), requests_replayed=replayed_from_queue(c),
            commit_reply_held=held, core_last_process=core_counters(c), peak_rss_mib=rss.stop_and_peak(),
        )
    finally:
        proxy.stop()
    context = f"{json.dumps(fig)}\n{c.describe()}"
    assert held, f"no COMMIT reply was seen to hold within 10 s\n{context}"
    assert all_acked, context
    assert fig["foreign"] == 0, context
    assert fig["missing_acked"] == 0, f"acknowledged spans lost in the crashes\n{context}"
    # The last process replayed the request whose commit reply was held: its dedupe must have
    # recognised it (or the kill did not land in the window this test claims to test).
    assert fig["core_last_process"]["duplicate_requests_skipped"] >= 1, context
    # duplicates_single_send: spans of requests the client sent once, stored twice: the collector
    # exported a request twice. Otherwise: a request the client sent again after a crash cut its
    # connection, whose first attempt had reached the queue; the request id (a hash of the request)
    # should catch that as well.
    assert fig["duplicates"] == 0, f"spans stored more than once after the crashes\n{context}"


# --------------------------------------------------------------------------- 5. connection cut


@pytest.mark.parametrize("cue", ["mid_copy", "at_commit"])
def test_connection_cut(cue: str, pg: PgCluster, start_collector):
    """A TCP proxy between the exporter and PostgreSQL resets every connection three times under
    load: mid_copy, while a COPY's data is on the wire (the server rolls back); at_commit, instead of
    passing the server's reply to a commit on (the rows are committed, the exporter cannot know:
    only dedupe keeps its retry from storing them twice)."""
    proxy = PgProxy(upstream_port=int(pg.dsn.rsplit(":", 1)[1].split("/")[0])).start()
    try:
        c = start_collector(dsn=proxy.dsn_for(pg.dsn), processors=FAULT_PROCESSORS)
        rss = RssSampler(c).start()
        load = OtlpLoad(c.traces_url, unique_name(f"cut_{cue}"), rate=20, spans_per_request=SPANS_PER_REQUEST).start()
        try:
            time.sleep(2)  # connections open, schema created
            for n in range(1, 4):
                if cue == "mid_copy":
                    proxy.arm_mid_copy(after_bytes=16 * 1024)
                else:
                    proxy.arm_at_commit()
                fired = proxy.wait_for_cut(n, timeout=10)
                proxy.disarm()
                assert fired, f"cut {n} ({cue}) never fired: no COPY seen on the wire in 10 s\n{c.describe()}"
                time.sleep(1.5)
            time.sleep(2)
        finally:
            proxy.disarm()
            all_acked, stored, duration = finish_and_count(load, pg.dsn, c)
        cuts = [
            {"cue": k.cue, "connections": k.connections, "copies_in_flight": k.copies_in_flight, "dropped": k.detail}
            for k in proxy.cuts
        ]
        fig = report(f"connection_cut_{cue}", load, stored, duration_s=duration, cuts=cuts,
                     proxy_connections=proxy.accepted, core=core_counters(c), peak_rss_mib=rss.stop_and_peak())
    finally:
        proxy.stop()
    if cue == "mid_copy":
        assert all(k["copies_in_flight"] >= 1 for k in cuts), cuts
    assert c.alive(), c.describe()
    assert_exactly_once(fig, all_acked, c)
    if cue == "at_commit":
        # Each dropped commit reply leaves a committed request that the exporter writes again;
        # the core must have recognised (some of) them, or the cuts did not do what they claim.
        assert fig["core"]["duplicate_requests_skipped"] >= 1, f"{json.dumps(fig)}\n{c.describe()}"


# --------------------------------------------------------------------------- 6. bad requests


# Go's HTTP server answers a body over max_request_body_size with 400 and closes the connection
# without reading the rest; a client still uploading may then see the reset before the answer (seen
# about 1 time in 13 on a loaded 2-core machine). Either way the request is refused, not acknowledged.
RESET = "connection reset"


def truncated(body: bytes) -> bytes:
    """`body` cut short at a point where it no longer parses (checked, not assumed)."""
    for cut in range(len(body) * 2 // 3, len(body) - 1):
        try:
            ExportTraceServiceRequest.FromString(body[:cut])
        except DecodeError:
            return body[:cut]
    raise AssertionError("no truncation of the request fails to parse")


def test_bad_and_oversized_requests_among_good_traffic(pg: PgCluster, start_collector):
    """Garbage, truncated, wrongly typed, over-limit and very large requests arrive between good ones.
    The receiver's limit (confighttp max_request_body_size) is its default, 20 MiB: a request above
    it is refused with 400; a 20 MB attribute in a ~20 MB request is valid and stored in full."""
    c = start_collector(dsn=pg.dsn, processors=FAULT_PROCESSORS)
    rss = RssSampler(c).start()
    service = unique_name("badreq")
    bad_service = service + "_bad"
    load = OtlpLoad(c.traces_url, service, rate=10, spans_per_request=SPANS_PER_REQUEST).start()

    def one_span(size: int) -> tuple[bytes, bytes]:
        span_id = secrets.token_bytes(8)
        return span_id, build_request(bad_service, [span_id], 0, pad=size)

    big_id, big_body = one_span(20_000_000)  # 20 MB attribute: under 20 MiB in all
    over_id, over_body = one_span(21 * MIB)  # over the receiver's limit
    _, small_body = one_span(0)
    assert len(big_body) < 20 * MIB < len(over_body)
    cases = [
        # (name, body, content type, expected statuses)
        ("garbage", b"this is not protobuf \xff\xfe\xfd\x00\x01" * 100, CONTENT_TYPE, {400}),
        ("truncated", truncated(build_request(bad_service, [secrets.token_bytes(8) for _ in range(50)], 0)), CONTENT_TYPE, {400}),
        ("bad_json", b'{"resourceSpans": [{"scopeSpans": [', "application/json", {400}),
        ("wrong_content_type", small_body, "text/plain", {415}),
        ("over_max_size", over_body, CONTENT_TYPE, {400, 413, RESET}),
        ("garbage_over_max_size", secrets.token_bytes(21 * MIB), CONTENT_TYPE, {400, 413, RESET}),
    ]
    results: dict[str, int | str] = {}

    def post(body: bytes, ctype: str, timeout: float) -> int | str:
        """The HTTP status; RESET when the server reset the connection before the client read an
        answer; otherwise the exception."""
        try:
            return http_post(c.traces_url, body, ctype, timeout=timeout)[0]
        except OSError as e:  # urllib.error.URLError, ConnectionResetError, BrokenPipeError, timeout
            reason = getattr(e, "reason", e)
            if isinstance(reason, (ConnectionResetError, BrokenPipeError)):
                return RESET
            return f"{type(e).__name__}: {e}"

    try:
        time.sleep(1)
        for name, body, ctype, _ in cases:
            results[name] = post(body, ctype, timeout=30)
            time.sleep(0.3)
        results["large_valid_20MB"] = post(big_body, CONTENT_TYPE, timeout=60)
        time.sleep(2)
    finally:
        all_acked, stored, duration = finish_and_count(load, pg.dsn, c)
    good = stored_span_ids(pg.dsn, c.spans_table, "service_name = %s", (service,))

    def bad_rows_now() -> dict[bytes, int]:
        """span id -> length of its padding attribute, for every stored span of the bad requests."""
        with psycopg.connect(pg.dsn, autocommit=True, connect_timeout=10) as conn:
            return {
                bytes(r[0]): r[1]
                for r in conn.execute(
                    f"SELECT span_id, length(span_attributes->>'load.pad') FROM {c.spans_table}"
                    " WHERE service_name = %s",
                    (bad_service,),
                )
            }

    bad_rows = bad_rows_now()
    fig = report("bad_and_oversized_requests", load, good, duration_s=duration, bad_request_statuses=results,
                 bad_rows_stored=len(bad_rows), peak_rss_mib=rss.stop_and_peak(), core=core_counters(c))
    problems = [
        f"{name}: HTTP {results.get(name)}, expected one of {sorted(map(str, expected))}"
        for name, _, _, expected in cases
        if results.get(name) not in expected
    ]
    if results.get("large_valid_20MB") != 200:
        problems.append(f"large_valid_20MB: HTTP {results.get('large_valid_20MB')}, expected 200")
    assert not problems, "\n".join(problems) + f"\n{c.describe()}"
    assert c.alive() and c.healthy(), c.describe()
    # Only the large valid span of the bad service is stored, whole.
    deadline = time.monotonic() + 30
    while big_id not in bad_rows and time.monotonic() < deadline:
        time.sleep(0.5)
        bad_rows = bad_rows_now()
    assert bad_rows == {big_id: 20_000_000}, (
        f"expected only the 20 MB span ({big_id.hex()}) from the bad requests, got "
        f"{ {k.hex(): v for k, v in bad_rows.items()} }\n{c.describe()}"
    )
    assert over_id not in bad_rows
    assert_exactly_once(fig, all_acked, c)


def test_request_larger_than_memory_limit_is_not_lost(pg: PgCluster, start_collector):
    """One valid request whose rows alone exceed memory_limit_mib (an 18 MB attribute against
    16 MiB; the receiver takes up to 20 MiB). The sending queue acknowledges it to the client before
    the exporter sees it, so the exporter must not then drop it: it must be stored (the core may let
    a request larger than the limit through when it holds nothing else, say). A client that got 200
    has been told its data is safe."""
    c = start_collector(
        dsn=pg.dsn,
        processors=FAULT_PROCESSORS,
        exporter_overrides=exporter_settings(memory_limit_mib=16),
    )
    span_id = secrets.token_bytes(8)
    body = build_request(unique_name("overlimit"), [span_id], 0, pad=18_000_000)
    assert 16 * MIB < len(body) < 20 * MIB
    status, answer = http_post(c.traces_url, body, CONTENT_TYPE, timeout=60)
    stored: list[bytes] = []
    deadline = time.monotonic() + 15
    while status == 200 and not stored and time.monotonic() < deadline:
        time.sleep(0.5)
        stored = stored_span_ids(pg.dsn, c.spans_table)
    figures = {"test": "request_larger_than_memory_limit", "status": status, "request_bytes": len(body),
               "memory_limit_mib": 16, "rows_stored": len(stored), "core": core_counters(c)}
    emit(
        f"[reliability] request_larger_than_memory_limit: status={status} bytes={len(body)}"
        f" memory_limit_mib=16 stored={len(stored)} core={figures['core']}",
        figures,
    )
    assert c.alive(), c.describe()
    assert status != 200 or stored == [span_id], (
        f"an {len(body)}-byte request was acknowledged (HTTP 200) and then not stored: {json.dumps(figures)}\n"
        f"{c.describe()}"
    )
