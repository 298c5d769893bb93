"""Run in separate processes by the concurrency tests: hammer one wallet and one seat allowance."""

from __future__ import annotations

from collections import Counter


def hammer(database_url: str, customer: str, attempts: int, worker: int) -> dict[str, int]:
    from tests.conftest import TEST_CONFIG
    from webapp import create_app
    from webapp.errors import DomainError
    from webapp.extensions import db
    from webapp.services import usage
    from webapp.services.actors import SYSTEM

    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": database_url})
    outcomes: Counter[str] = Counter()
    with app.app_context():
        for n in range(attempts):
            feature = "api_calls" if n % 2 == 0 else "seats"
            try:
                usage.record_usage(
                    SYSTEM, customer_key=customer, feature_key=feature, event_id=f"p{worker}-{n}"
                )
                outcomes[f"{feature}:ok"] += 1
            except DomainError as exc:
                outcomes[f"{feature}:{exc.code}"] += 1
        db.session.remove()
        db.engine.dispose()
    return dict(outcomes)
