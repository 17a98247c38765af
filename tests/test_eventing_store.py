"""The durable event log: real SIGKILL crashes, restart recovery, delivery state machine."""

from __future__ import annotations

import inspect
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from labkit.eventing.events import Event
from labkit.eventing.store import (
    DEAD_LETTER_SINK,
    SUBSCRIBER,
    EventStore,
    StoreError,
)

# A child process that appends events and prints each log id the moment append() returns --
# the point where the broker would answer 202. It is then killed with SIGKILL: by the parent
# at an arbitrary moment ("parent"), or by itself right after an append returns ("self").
# "acks-before-commit" is the control: a store that answers before committing, which the same
# check must catch, so the durability test is known to be able to fail.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from contextlib import contextmanager
    from labkit.eventing.events import Event
    from labkit.eventing.store import EventStore

    class AcksBeforeCommit(EventStore):
        @contextmanager
        def _transaction(self):
            with self._lock:
                if not self._db.in_transaction:
                    self._db.execute("BEGIN")
                yield self._db

    path, mode = sys.argv[1], sys.argv[2]
    store = (AcksBeforeCommit if mode == "acks-before-commit" else EventStore)(path)
    for i in range(100_000):
        event_id = store.append(make_event(i), "default", ["t1", "t2"], now=1000.0)
        print(event_id, i, flush=True)
        if mode != "parent" and i == 24:
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


def make_event(i: int) -> Event:
    """Event number `i`; the child gets this function's source, so both sides build the same."""
    return Event({"specversion": "1.0", "id": f"e{i}", "source": "/crash", "type": "t",
                  "seq": i, "flag": i % 2 == 0}, b"payload %d" % i)


def crash_child(path: Path, mode: str, acknowledged_before_kill: int = 50) -> dict[int, int]:
    """Run the child until it is SIGKILLed; return {log id: event number} it acknowledged."""
    code = "from labkit.eventing.events import Event\n" + inspect.getsource(make_event) + CHILD
    child = subprocess.Popen([sys.executable, "-c", code, str(path), mode],
                             stdout=subprocess.PIPE, text=True)
    acknowledged: dict[int, int] = {}
    try:
        assert child.stdout is not None
        for line in child.stdout:
            event_id, number = map(int, line.split())
            acknowledged[event_id] = number
            if mode == "parent" and len(acknowledged) >= acknowledged_before_kill:
                child.kill()  # SIGKILL while it keeps appending
                break
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -9, f"child was not SIGKILLed (exit {child.returncode})"
    return acknowledged


def missing_after_restart(path: Path, acknowledged: dict[int, int]) -> list[int]:
    """Acknowledged events the reopened store does not hold intact with pending deliveries."""
    missing = []
    with EventStore(path) as store:
        for event_id, number in acknowledged.items():
            try:
                stored = store.get(event_id)
            except StoreError:
                missing.append(event_id)
                continue
            states = {(d.trigger, d.state) for d in store.deliveries(event_id)}
            if stored.event != make_event(number) or states != {("t1", "pending"),
                                                               ("t2", "pending")}:
                missing.append(event_id)
    return missing


@pytest.mark.parametrize("mode", ["parent", "self"])
def test_every_acknowledged_event_survives_sigkill(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "events.db"
    acknowledged = crash_child(path, mode)
    assert len(acknowledged) >= 25
    assert missing_after_restart(path, acknowledged) == []


def test_control_a_store_that_acks_before_commit_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    acknowledged = crash_child(path, "acks-before-commit")
    assert len(missing_after_restart(path, acknowledged)) == len(acknowledged) == 25


RECOVERY_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from labkit.eventing.events import Event
    from labkit.eventing.store import EventStore

    store = EventStore(sys.argv[1])
    for i in range(3):
        store.append(Event({"specversion": "1.0", "id": f"r{i}", "source": "/r", "type": "t"},
                           None), "default", ["t1", "t2"], now=10.0)
    assert len(store.claim(now=10.0)) == 6
    store.ack(1, "t1", status=200, now=11.0)
    store.retry(1, "t2", at=20.0, status=500, now=11.0)
    store.dead_letter(2, "t1", {"knativeerrorcode": 422, "knativeerrordest": "http://x/"},
                      status=422, now=12.0)
    print("ready", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_restart_redelivers_everything_not_finished(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    result = subprocess.run([sys.executable, "-c", RECOVERY_CHILD, str(path)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == -9 and result.stdout == "ready\n", result.stderr
    with EventStore(path) as store:
        assert store.counts() == {"pending": 5, "in_flight": 0, "delivered": 1,
                                  "dead_lettered": 0, "dropped": 0}
        claims = {(c.event_id, c.trigger): c for c in store.claim(now=100.0)}
    assert set(claims) == {(1, "t2"), (2, "t1"), (2, "t2"), (3, "t1"), (3, "t2")}
    assert claims[(1, "t2")].attempt == 2  # one recorded failure before the crash
    assert claims[(3, "t1")].attempt == 1  # in flight at the crash: outcome unknown, redo
    dead = claims[(2, "t1")]
    assert dead.target == DEAD_LETTER_SINK and dead.attempt == 1
    assert dead.event.attributes["knativeerrorcode"] == 422
    assert dead.event.id == "r1"


# -- in-process behaviour ------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path):
    with EventStore(tmp_path / "events.db") as opened:
        yield opened


def event(n: int) -> Event:
    return Event({"specversion": "1.0", "id": f"n{n}", "source": "/s", "type": "t"}, b"%d" % n)


def test_wal_mode_and_synchronous_setting(tmp_path: Path) -> None:
    path = tmp_path / "full.db"
    EventStore(path, synchronous="FULL").close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(ValueError, match="synchronous"):
        EventStore(tmp_path / "x.db", synchronous="OFF")


def test_claim_retry_ack_cycle(store: EventStore) -> None:
    event_id = store.append(event(1), "default", ["t1"], now=0.0)
    (claim,) = store.claim(now=0.0)
    assert (claim.event_id, claim.trigger, claim.target, claim.attempt) == (event_id, "t1",
                                                                            SUBSCRIBER, 1)
    assert claim.event == event(1) and claim.broker == "default"
    assert store.claim(now=0.0) == []  # in flight: not handed out twice
    store.retry(event_id, "t1", at=5.0, status=503, now=0.0)
    assert store.claim(now=4.9) == [] and store.next_due() == 5.0
    (claim,) = store.claim(now=5.0)
    assert claim.attempt == 2
    store.ack(event_id, "t1", status=202, now=5.0)
    (state,) = store.deliveries(event_id)
    assert (state.state, state.attempts, state.last_status) == ("delivered", 2, 202)
    assert store.next_due() is None


def test_dead_letter_then_ack_is_dead_lettered(store: EventStore) -> None:
    event_id = store.append(event(1), "default", ["t1"], now=0.0)
    store.claim(now=0.0)
    store.dead_letter(event_id, "t1", {"knativeerrorcode": 400}, status=400, now=1.0)
    (claim,) = store.claim(now=1.0)
    assert claim.target == DEAD_LETTER_SINK and claim.attempt == 1
    assert claim.event == event(1).with_attributes(knativeerrorcode=400)
    store.ack(event_id, "t1", now=1.0)
    assert store.counts()["dead_lettered"] == 1


def test_outcome_without_claim_is_refused(store: EventStore) -> None:
    event_id = store.append(event(1), "default", ["t1"], now=0.0)
    with pytest.raises(StoreError, match="not in flight"):
        store.ack(event_id, "t1")
    with pytest.raises(StoreError, match="not in flight"):
        store.drop(event_id, "nope")


def test_unrouted_events_wait_for_route(store: EventStore) -> None:
    first, second = store.append_batch([(event(1), "a", None), (event(2), "b", None)], now=0.0)
    assert [s.id for s in store.unrouted()] == [first, second]
    assert store.claim(now=0.0) == []
    store.route(first, ["t1", "t2"], now=0.0)
    store.route(first, ["t1", "t2"], now=0.0)  # idempotent: a re-route after a crash
    assert [s.id for s in store.unrouted()] == [second]
    assert sorted(c.trigger for c in store.claim(now=0.0)) == ["t1", "t2"]
    with pytest.raises(StoreError, match="no event"):
        store.route(999, ["t1"])


def test_no_deduplication(store: EventStore) -> None:
    ids = [store.append(event(1), "default", ["t1"], now=0.0) for _ in range(2)]
    assert ids[0] != ids[1]
    assert len(store.claim(now=0.0)) == 2


def test_compaction_keeps_anything_still_deliverable(store: EventStore) -> None:
    done = store.append(event(1), "default", ["t1", "t2"], now=0.0)
    pending = store.append(event(2), "default", ["t1"], now=0.0)
    unrouted = store.append(event(3), "default", None, now=0.0)
    no_triggers = store.append(event(4), "default", [], now=0.0)
    for claim in store.claim(now=0.0):
        if claim.event_id == done:
            store.ack(done, claim.trigger, now=0.0)
        else:
            store.retry(claim.event_id, claim.trigger, at=9.0, now=0.0)
    assert store.compact() == 2
    assert {s.id for s in store.events()} == {pending, unrouted}
    assert [s.id for s in store.events(broker="other")] == []
    with pytest.raises(StoreError):
        store.get(no_triggers)


def test_ack_batch_is_all_or_none(store: EventStore) -> None:
    first = store.append(event(1), "default", ["t1"], now=0.0)
    second = store.append(event(2), "default", ["t1"], now=0.0)
    store.claim(now=0.0)
    with pytest.raises(StoreError, match="not in flight"):
        store.ack_batch([(first, "t1", 200), (second, "t2", 200)], now=0.0)
    assert store.counts()["in_flight"] == 2  # the valid half was rolled back too
    store.ack_batch([(first, "t1", 200), (second, "t1", 204)], now=0.0)
    assert store.counts()["delivered"] == 2
