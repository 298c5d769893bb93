"""`make soak`: a bounded load test against a real gunicorn on SQLite and on PostgreSQL.

For SOAK_MINUTES minutes per database (default 1), SOAK_CLIENTS clients (default 4) mix single
and batch usage, topups, entitlement checks, seat assignments and reclaims, and replays of events
already sent. Whatever was not acknowledged is then retried with the same ids. The script prints
what it sent, what was acknowledged, what is stored and every difference, runs
`flask ledger verify`, and exits 1 unless every difference is zero and the ledger is clean.

PostgreSQL is a throwaway database `rel_*` on TEST_DATABASE_URL's server, dropped at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.reliability import (  # noqa: E402
    SECRET,
    Gunicorn,
    Traffic,
    database,
    differences,
    pg_reachable,
    prepare,
    stored_state,
)


def soak(backend: str, minutes: float, clients: int, tmp: Path) -> bool:
    print(f"== {backend}: {minutes:g} minute(s), {clients} clients", flush=True)
    with database(backend, tmp, "soak") as url:
        key = prepare(url)["admin"]
        with Gunicorn(url, log=tmp / f"gunicorn-{backend}.log") as server:
            traffic = Traffic(server.base, key, prefix="soak", mix=True)
            started = time.monotonic()
            threads = traffic.run(clients)
            time.sleep(minutes * 60)
            traffic.stop.set()
            for thread in threads:
                thread.join(timeout=60)
            elapsed = time.monotonic() - started
            unacked_events = len(set(traffic.sent) - traffic.acked)
            unacked_topups = len(set(traffic.topups_sent) - traffic.topups_acked)
            retried = traffic.retry_unacknowledged()
        state = stored_state(url, "soak")
        verify = subprocess.run(
            [str(Path(sys.executable).parent / "flask"), "--app", "webapp", "ledger", "verify"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url, "WEBAPP_SECRET_KEY": SECRET},
            capture_output=True,
            text=True,
        )
    requests_sent = sum(traffic.statuses.values())
    refused = {e for e, status in retried.items() if status not in (200, 201)}
    stored = set(state["events"])
    print(
        f"   requests:           {requests_sent} in {elapsed:.0f} s "
        f"({requests_sent / elapsed:.0f}/s)"
    )
    print(f"   statuses:           {dict(sorted(traffic.statuses.items(), key=str))}")
    print(f"   events sent:        {len(traffic.sent)}")
    print(
        f"   events acknowledged:{len(traffic.acked):>7} "
        f"({unacked_events} not at first, retried with the same event_id)"
    )
    print(f"   events refused:     {len(refused)} (4xx on retry, e.g. a reclaim with no seat)")
    print(
        f"   events stored:      {len(stored)} ({sum(c for c, _ in state['events'].values())} rows)"
    )
    print(
        f"   topups sent:        {len(traffic.topups_sent)}, acknowledged "
        f"{len(traffic.topups_acked)} ({unacked_topups} retried), stored {len(state['topups'])}"
    )
    problems = differences(traffic, state)
    missing = sorted(set(traffic.acked) - stored)
    extra = sorted(stored - set(traffic.sent))
    never = sorted(set(traffic.sent) - stored - refused)
    problems += [f"acknowledged but not stored: {e}" for e in missing]
    problems += [f"stored but never sent: {e}" for e in extra]
    problems += [f"sent, not refused, yet not stored: {e}" for e in never]
    problems += [f"server error: {e}" for e in traffic.server_errors]
    print(
        f"   ledger verify:      exit {verify.returncode} "
        f"({'clean' if verify.returncode == 0 else 'VIOLATIONS, below'})"
    )
    if verify.returncode != 0:
        problems.append("ledger verify failed:\n" + verify.stdout + verify.stderr)
    print(f"   differences:        {len(problems)}")
    for problem in problems[:20]:
        print(f"     - {problem}")
    return not problems


def main() -> int:
    minutes = float(os.environ.get("SOAK_MINUTES", "1"))
    clients = int(os.environ.get("SOAK_CLIENTS", "4"))
    backends = os.environ.get("SOAK_BACKENDS", "sqlite,postgresql").split(",")
    ok = True
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        for backend in backends:
            if backend == "postgresql" and not pg_reachable():
                print("== postgresql: not reachable at TEST_DATABASE_URL; FAILED")
                ok = False
                continue
            ok = soak(backend, minutes, clients, Path(tmp)) and ok
    print("soak: OK, no differences" if ok else "soak: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
