"""Crash safety on both databases: a real gunicorn (master and two workers) under load from four
clients is killed with SIGKILL mid-stream, twice, and restarted. Every request acknowledged with
201 is stored exactly once, nothing is stored that was not sent, every stored event is complete
(its ledger entry, its counter, the wallet), `ledger verify` is clean, and clients retrying with
the same event_id / idempotency key after the crash create no duplicates."""

from __future__ import annotations

import pytest

from tests.reliability import (
    Gunicorn,
    Traffic,
    database,
    differences,
    pg_reachable,
    prepare,
    stored_state,
    wait_until,
)

ACKED_PER_ROUND = 30  # acknowledged requests before each kill: the stream is well under way
CLIENTS = 4


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_mid_stream_loses_nothing_and_duplicates_nothing(backend, tmp_path, pg_unavailable):
    if backend == "postgresql" and (pg_unavailable or not pg_reachable()):
        pytest.skip(pg_unavailable or "PostgreSQL not reachable")
    with database(backend, tmp_path, "crash") as url:
        key = prepare(url)["admin"]
        server = Gunicorn(url, log=tmp_path / "gunicorn.log").start()
        traffic = Traffic(server.base, key, prefix="crash", mix=True)
        try:
            for _ in range(2):
                target = len(traffic.acked) + ACKED_PER_ROUND
                threads = traffic.run(CLIENTS)
                wait_until(lambda n=target: len(traffic.acked) >= n, f"{target} acknowledged")
                server.kill()  # SIGKILL to the master and both workers while requests fly
                # Each client stops by itself at its first connection error.
                for thread in threads:
                    thread.join(timeout=30)
                assert not any(thread.is_alive() for thread in threads)

                # After the crash, before any retry: what was acknowledged is there exactly once,
                # and whatever else is there is whole.
                problems = differences(traffic, stored_state(url, "crash"))
                assert not problems, problems
                server.start()
            assert traffic.statuses.get("connection error", 0) > 0, "the kill hit no request"
            assert len(traffic.acked) > 20, traffic.statuses

            retried = traffic.retry_unacknowledged()
            state = stored_state(url, "crash")
        finally:
            server.kill()
    problems = differences(traffic, state)
    assert not problems, problems
    assert not traffic.server_errors, traffic.server_errors[:5]
    # After the retries every usage event that could be recorded is stored exactly once.
    lost = {
        e for e in set(traffic.sent) - set(state["events"]) if retried.get(e) in (None, 200, 201)
    }
    assert not lost, sorted(lost)[:10]
    assert set(traffic.topups_sent) == set(state["topups"])
    assert all(count == 1 for count, _ in state["events"].values())
    assert state["verify_ok"], state["verify"]
