"""Issue 14: usage corrections race new usage and a void on one wallet, with real threads on a
real SQLite file and a real PostgreSQL. Two threads send the same corrections under the same
idempotency keys (each applies once; the two send each step together, then the next), others
spend the wallet, one voids a grant the events drew from. Afterwards every credit is accounted
for exactly and `ledger verify` is clean."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from tests.factories import add_customer
from webapp.errors import DomainError
from webapp.extensions import db
from webapp.models import CreditGrant, UsageCorrection, UsageEvent, Wallet
from webapp.services import usage, wallets
from webapp.services.actors import SYSTEM
from webapp.services.corrections import correct_usage
from webapp.services.verify import verify_ledger

pytestmark = pytest.mark.slow

CUSTOMER = "cust-corrections-race"
EVENTS = 20  # recorded first: 4 calls each, 0.08 credits each (1.6: one grant half spent)
STEPS = [2, 8, 1]  # each event corrected to 2 (refund), 8 (charge, may be refused), then 1
PAIRS = 2  # pairs of threads sending the same corrections with the same keys
SPENDERS = 4
SPEND_ATTEMPTS = 30
GRANTS = 6  # 6 x 0.5 = 3 credits


def test_corrections_race_usage_and_a_void_on_one_wallet(catalog, app):
    now = datetime.now(UTC)
    add_customer(CUSTOMER, api_allowance=None, topup=None)
    grant_ids = []
    for i in range(GRANTS):
        result = wallets.topup_wallet(
            SYSTEM,
            customer_key=CUSTOMER,
            credit_system="credits",
            amount="0.5",
            kind="granted" if i % 2 else "purchased",
            priority=(100, 200)[i % 2],
            effective_at=(now - timedelta(hours=1)).isoformat(),
            expires_at=None if i % 3 else (now + timedelta(days=i + 1)).isoformat(),
        )
        grant_ids.append(result.entry.grant_id)
    for n in range(EVENTS):
        usage.record_usage(
            SYSTEM, customer_key=CUSTOMER, feature_key="api_calls", amount=4, event_id=f"e{n}"
        )
    # The grant the first events drew from, with credits left: voided while corrections run.
    drawn = db.session.scalar(
        select(CreditGrant.id)
        .where(
            CreditGrant.id.in_(grant_ids),
            CreditGrant.remaining_micros > 0,
            CreditGrant.remaining_micros < 500_000,
        )
        .limit(1)
    )
    assert drawn is not None
    db.session.remove()

    outcomes: Counter[str] = Counter()
    spent: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    threads_total = 2 * PAIRS + SPENDERS + 1
    barrier = threading.Barrier(threads_total)
    # The two threads of a pair send each step together and wait for each other before the
    # next: a refused step (insufficient credits) stores no key, so without this the twin could
    # send it again, accepted, after the pair's last step (seen: 2 runs in 10 on PostgreSQL).
    steps_done = [threading.Barrier(2) for _ in range(PAIRS)]

    def note(key: str) -> None:
        with lock:
            outcomes[key] += 1

    def corrector(pair: int) -> None:
        with app.app_context():
            barrier.wait()
            for n in range(pair, EVENTS, PAIRS):
                for step, actual in enumerate(STEPS):
                    try:
                        result = correct_usage(
                            SYSTEM,
                            customer_key=CUSTOMER,
                            event_id=f"e{n}",
                            actual_amount=actual,
                            reason=f"step {step}",
                            idempotency_key=f"e{n}-{step}",
                        )
                    except DomainError as exc:
                        note(f"correction:{exc.code}")
                    except BaseException as exc:  # noqa: BLE001
                        errors.append(exc)
                    else:
                        if result.replayed:
                            note("correction:replay")
                        else:
                            note("correction:ok" if result.corrected else "correction:noop")
                    steps_done[pair].wait(timeout=120)
            db.session.remove()

    def spender(worker: int) -> None:
        with app.app_context():
            barrier.wait()
            for n in range(SPEND_ATTEMPTS):
                try:
                    result = usage.record_usage(
                        SYSTEM,
                        customer_key=CUSTOMER,
                        feature_key="api_calls",
                        event_id=f"s{worker}-{n}",
                    )
                except DomainError as exc:
                    note(f"usage:{exc.code}")
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)
                else:
                    note("usage:ok")
                    with lock:
                        spent.append(result.credits_micros or 0)
            db.session.remove()

    def voider() -> None:
        with app.app_context():
            barrier.wait()
            try:
                wallets.void_grant(SYSTEM, grant_id=drawn, reason="refund")
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
            db.session.remove()

    threads = [threading.Thread(target=corrector, args=(p,)) for p in range(PAIRS)]
    threads += [threading.Thread(target=corrector, args=(p,)) for p in range(PAIRS)]
    threads += [threading.Thread(target=spender, args=(w,)) for w in range(SPENDERS)]
    threads.append(threading.Thread(target=voider))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors

    report = verify_ledger()
    assert report.ok, report.violations
    # Each correction applied once: the two threads of a pair send the same keys.
    sent = 2 * EVENTS * len(STEPS)
    assert sum(v for k, v in outcomes.items() if k.startswith("correction:")) == sent
    assert set(k for k in outcomes if k.startswith("correction:")) <= {
        "correction:ok",
        "correction:replay",
        "correction:insufficient_credits",
    }
    # A key's second sending replays the first (seen under the counter's lock), never a no-op.
    assert outcomes["correction:noop"] == 0
    assert 0 < outcomes["correction:replay"] <= outcomes["correction:ok"]
    applied = db.session.scalar(select(func.count()).select_from(UsageCorrection))
    assert applied == outcomes["correction:ok"]
    # The last step is a refund, always accepted: every event ends at 1 call.
    effective = dict(
        db.session.execute(
            select(
                UsageEvent.event_id,
                UsageEvent.amount_micros + func.sum(UsageCorrection.delta_micros),
            )
            .join(UsageCorrection, UsageCorrection.usage_event_id == UsageEvent.id)
            .group_by(UsageEvent.event_id, UsageEvent.amount_micros)
        ).all()
    )
    assert effective == {f"e{n}": 1_000_000 for n in range(EVENTS)}
    # Every credit accounted for: what the wallet holds, what the events cost at their
    # effective amounts, what the void and expiries took.
    wallet_id = db.session.scalar(select(CreditGrant.wallet_id).where(CreditGrant.id == drawn))
    balance = db.session.scalar(select(Wallet.balance_micros).where(Wallet.id == wallet_id))
    removed = db.session.scalar(
        select(func.sum(CreditGrant.voided_micros + CreditGrant.expired_micros)).where(
            CreditGrant.wallet_id == wallet_id
        )
    )
    assert removed > 0  # the void
    assert balance + EVENTS * 20_000 + sum(spent) + removed == GRANTS * 500_000
    assert outcomes["usage:ok"] == len(spent) > 0
