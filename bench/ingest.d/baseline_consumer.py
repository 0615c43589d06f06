#!/usr/bin/env python3
"""The ELT baseline's client side: a minimal confluent-kafka consumer that ships
raw Kafka values, as they are, into ClickHouse.

Every message becomes one JSONEachRow row
    {"topic": ..., "partition": ..., "offset": ..., "kafka_ts_ms": ..., "value": "<the message>"}
(the value decoded as UTF-8 with invalid bytes replaced by U+FFFD). Rows are
batched (--batch rows, or --flush-ms after the batch's first row) and each batch is piped into its own
    clickhouse-client --port PORT --query "INSERT INTO DB.kafka_raw FORMAT JSONEachRow"
process (run under /usr/bin/time to measure it). One insert is in flight while
the next batch is being consumed (so the Python process and ClickHouse work in
parallel); a batch's offsets are committed synchronously once its
clickhouse-client exited 0. A failed insert is fatal
(exit 1) -- the offsets stay uncommitted.

Stops after --stop-after-idle seconds without a message (and nothing in flight)
and writes a JSON summary (--summary): first/last message times, counts, the
process's own rusage and that of its (waited-for) clickhouse-client children.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topics", required=True, help="comma-separated")
    ap.add_argument("--database", required=True)
    ap.add_argument("--ch-host", default="127.0.0.1")
    ap.add_argument("--ch-port", default="9000")
    ap.add_argument("--batch", type=int, default=50000)
    ap.add_argument("--flush-ms", type=int, default=0,
                    help="also ship a batch once its first row waited this long (0: size only)")
    ap.add_argument("--stop-after-idle", type=float, default=3.0)
    ap.add_argument("--session-timeout-ms", default="6000")
    ap.add_argument("--heartbeat-interval-ms", default="500")
    ap.add_argument("--summary", required=True)
    ap.add_argument("--client-times", required=True,
                    help="file that /usr/bin/time appends each clickhouse-client's "
                         "'maxrss_kib utime stime wall' to")
    a = ap.parse_args()

    consumer = Consumer({
        "bootstrap.servers": a.brokers,
        "group.id": a.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": a.session_timeout_ms,
        "heartbeat.interval.ms": a.heartbeat_interval_ms,
        # The same prefetch bound as the ingest worker (librdkafka's default is 64 MiB).
        "queued.max.messages.kbytes": 32768,
        # The same fetch wait as the ingest worker (common/src/kafka.rs).
        "fetch.wait.max.ms": 100,
    })
    consumer.subscribe(a.topics.split(","), on_assign=lambda c, ps: print(
        f"baseline: partitions assigned: {len(ps)}", file=sys.stderr, flush=True))
    # /usr/bin/time measures each clickhouse-client exactly (its peak RSS as
    # well: the RUSAGE_CHILDREN peak of a forked child starts at our own RSS).
    insert = ["/usr/bin/time", "-a", "-o", a.client_times, "-f", "%M %U %S %e",
              "clickhouse-client", "--host", a.ch_host, "--port", str(a.ch_port),
              "--query", f"INSERT INTO {a.database}.kafka_raw FORMAT JSONEachRow"]
    dumps = json.JSONEncoder(ensure_ascii=False).encode

    t_launch = time.time()
    t_first = t_last = None
    consumed = batches = 0
    rows = []            # the open batch (JSON lines)
    opened = None        # monotonic time of the open batch's first row
    hi = {}              # (topic, partition) -> next offset, for the open batch
    inflight = None      # (process, writer thread, offsets to commit, rows)
    last_msg = time.monotonic()

    def finish_inflight():
        nonlocal inflight, batches
        if inflight is None:
            return
        proc, writer, offsets, n = inflight
        writer.join()
        rc = proc.wait()
        if rc != 0:
            raise SystemExit(f"baseline: clickhouse-client exited {rc} for a batch of {n} rows")
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                        asynchronous=False)
        batches += 1
        inflight = None

    def ship():
        nonlocal rows, hi, inflight, opened
        opened = None
        if not rows:
            return
        data = ("\n".join(rows) + "\n").encode("utf-8")
        finish_inflight()  # at most one insert in flight; commit it first
        proc = subprocess.Popen(insert, stdin=subprocess.PIPE)

        def write(p=proc, d=data):
            try:
                p.stdin.write(d)
            finally:
                p.stdin.close()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        inflight = (proc, writer, hi, len(rows))
        rows, hi = [], {}

    while True:
        msgs = consumer.consume(num_messages=10000, timeout=0.2)
        now = time.monotonic()
        if not msgs:
            ship()
            finish_inflight()
            if now - last_msg >= a.stop_after_idle and consumed > 0:
                break
            if consumed == 0 and now - last_msg >= max(a.stop_after_idle, 60):
                raise SystemExit("baseline: no message within 60 s")
            continue
        real = 0
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                continue
            real += 1
            if t_first is None:
                t_first = time.time()
            v = m.value() or b""
            topic, part, off = m.topic(), m.partition(), m.offset()
            rows.append(dumps({"topic": topic, "partition": part, "offset": off,
                               "kafka_ts_ms": m.timestamp()[1],
                               "value": v.decode("utf-8", "replace")}))
            hi[(topic, part)] = off + 1
        if real == 0:
            continue
        last_msg = now
        consumed += real
        t_last = time.time()
        if opened is None and rows:
            opened = now
        if len(rows) >= a.batch or (a.flush_ms and opened is not None
                                    and (time.monotonic() - opened) * 1000 >= a.flush_ms):
            ship()
    ship()
    finish_inflight()
    consumer.close()

    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(a.summary, "w") as f:
        json.dump({
            "t_launch": t_launch, "t_first": t_first, "t_last": t_last,
            "consumed": consumed, "batches": batches,
            "py_cpu_s": me.ru_utime + me.ru_stime,
            "py_utime_s": me.ru_utime, "py_stime_s": me.ru_stime,
            "py_maxrss_kib": me.ru_maxrss,
            "client_cpu_s": ch.ru_utime + ch.ru_stime,
            "client_maxrss_kib": ch.ru_maxrss,
            "pid": os.getpid(),
        }, f)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
