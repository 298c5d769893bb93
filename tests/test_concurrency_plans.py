"""Included credits are issued once per (customer, plan, credit system, period), whatever runs
at once: threads of this process and `flask plans issue-credits` in two other processes, on a
real SQLite file and on PostgreSQL."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy import func, select

from tests.factories import add_customer
from webapp.extensions import db
from webapp.models import CreditGrant, LedgerEntry, PlanCreditIssuance
from webapp.services import plans
from webapp.services.actors import SYSTEM
from webapp.services.verify import verify_ledger

CUSTOMERS = 12
THREADS = 4
PROCESSES = 2
RUNS = 3


def start_issuer(database_url: str) -> subprocess.Popen[str]:
    code = "import sys; from tests.concurrency_worker import issue_loop; issue_loop(*sys.argv[1:])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, database_url, str(RUNS)],
        cwd=Path(__file__).parent.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


def test_threads_and_processes_never_issue_included_credits_twice(catalog, app, database_url):
    entitlements = [
        {
            "feature_key": "api_calls",
            "allowance": "1000",
            "reset_period": "month",
            "overage": "block",
        }
    ]
    plans.create_plan(SYSTEM, key="team", name="Team", entitlements=entitlements)
    keys = [f"cust-team-{n}" for n in range(CUSTOMERS)]
    for key in keys:
        add_customer(key, topup=None)
        plans.change_customer_plan(SYSTEM, key, "team")  # no included credits yet: none issued
    plans.update_plan(
        SYSTEM,
        "team",
        included_credits=[{"credit_system": "credits", "amount": "5", "period": "month"}],
    )
    db.session.remove()

    issuers = [start_issuer(database_url) for _ in range(PROCESSES)]
    barrier = threading.Barrier(THREADS + 1)
    issued: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        with app.app_context():
            barrier.wait()
            try:
                for _ in range(RUNS):
                    n = plans.issue_included_credits(batch=3)
                    with lock:
                        issued.append(n)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
            db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for proc in issuers:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    barrier.wait()
    for t in threads:
        t.join(timeout=180)
    outputs = [proc.communicate(timeout=180) for proc in issuers]
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    by_processes = 0
    for proc, (out, err) in zip(issuers, outputs, strict=True):
        assert proc.returncode == 0, err
        for line in out.splitlines():
            match = re.fullmatch(r"0 Issued (\d+) included credit grants\.", line)
            assert match, (line, err)
            by_processes += int(match[1])
    # Every customer got exactly one issue, whoever made it.
    assert sum(issued) + by_processes == CUSTOMERS
    issues = db.session.scalar(select(func.count()).select_from(PlanCreditIssuance))
    grants = db.session.scalar(
        select(func.count()).select_from(CreditGrant).where(CreditGrant.actor == "system:plans")
    )
    topups = db.session.scalar(
        select(func.count()).select_from(LedgerEntry).where(LedgerEntry.actor == "system:plans")
    )
    assert issues == grants == topups == CUSTOMERS
    report = verify_ledger()
    assert report.ok, report.violations
