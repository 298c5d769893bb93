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


def expire_loop(database_url: str, stop_file: str) -> None:
    """`flask credits expire`, run again and again until ``stop_file`` exists (at least twice):
    prints "ready" once the app is up, waits for a line on stdin ("go"), then prints one line
    per run, its exit code and output."""
    import os
    import sys

    from tests.conftest import TEST_CONFIG
    from webapp import create_app

    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": database_url})
    runner = app.test_cli_runner()
    print("ready", flush=True)
    sys.stdin.readline()  # "go": started together with the test's threads
    runs = 0
    while runs < 2 or not os.path.exists(stop_file):
        with app.app_context():  # as `flask` does: a fresh context (and session) per run
            result = runner.invoke(args=["credits", "expire", "--batch", "1"])
        runs += 1
        print(result.exit_code, " ".join(result.output.split()), flush=True)
        if result.exit_code != 0:
            import traceback

            traceback.print_exception(result.exception, file=sys.stderr)
            break


def issue_loop(database_url: str, runs: str) -> None:
    """`flask plans issue-credits`, ``runs`` times: prints "ready" once the app is up, waits for
    a line on stdin ("go"), then prints one line per run (exit code and output)."""
    import sys

    from tests.conftest import TEST_CONFIG
    from webapp import create_app

    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": database_url})
    runner = app.test_cli_runner()
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(int(runs)):
        with app.app_context():
            result = runner.invoke(args=["plans", "issue-credits", "--batch", "3"])
        print(result.exit_code, " ".join(result.output.split()), flush=True)
        if result.exit_code != 0:
            import traceback

            traceback.print_exception(result.exception, file=sys.stderr)
            break
