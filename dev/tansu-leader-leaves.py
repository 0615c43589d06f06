#!/usr/bin/env python3
"""Reproduces the dev broker's wedged consumer group (docs/RELIABILITY.md,
"known limits"): the group's leader leaves while a second member joins, and
no member of that group is ever assigned a partition again.

usage: dev/tansu-leader-leaves.py [--bootstrap HOST:PORT] [--leave-after S]

Against a running broker (default: the dev stack's, 127.0.0.1:9092; it
creates a topic of its own). --leave-after 1 wedges the group on tansu;
--leave-after 15 (after the second member's assignment) does not.
Exit 1 when the second member got nothing within 30 s.
"""
import argparse
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic


class Member:
    """A consumer polling in its own thread, tracking its assignment."""

    def __init__(self, bootstrap, group, name, topic):
        self.assigned = set()
        self.stop = False
        self.c = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "client.id": name,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
        })
        self.c.subscribe(
            [topic],
            on_assign=lambda c, ps: self.assigned.update((p.topic, p.partition) for p in ps),
            on_revoke=lambda c, ps: self.assigned.difference_update(
                (p.topic, p.partition) for p in ps),
        )
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop:
            self.c.poll(0.1)

    def close(self):
        self.stop = True
        self.t.join()
        self.c.close()


def wait(pred, timeout):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return round(time.time() - t0, 1)
        time.sleep(0.1)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--leave-after", type=float, default=1.0,
                    help="seconds between B subscribing and A closing [1]")
    a = ap.parse_args()
    tag = uuid.uuid4().hex[:8]
    topic, group = f"wedge_{tag}", f"wedge_{tag}"
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    for f in admin.create_topics([NewTopic(topic, 4, 1)]).values():
        f.result()
    p = Producer({"bootstrap.servers": a.bootstrap})
    for _ in range(100):
        p.produce(topic, b"x")
    p.flush()
    first = Member(a.bootstrap, group, "a", topic)
    print("A owns all 4 partitions after", wait(lambda: len(first.assigned) == 4, 60), "s")
    second = Member(a.bootstrap, group, "b", topic)
    time.sleep(a.leave_after)
    first.close()
    took = wait(lambda: len(second.assigned) == 4, 30)
    state = admin.describe_consumer_groups([group])[group].result().state
    print(f"B owns {len(second.assigned)} partitions {took} s after A left; group state {state}")
    second.close()
    admin.delete_topics([topic])
    raise SystemExit(0 if took is not None else 1)


if __name__ == "__main__":
    main()
