"""`make run` starts the app and one worker; one Ctrl-C (SIGINT to the terminal's process
group, as a terminal sends it) stops both. Runs the real Makefile in a scratch folder, with
the existing virtualenv (its install stamp is taken as up to date: nothing is installed)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from tests.reliability import BIN, ROOT, free_port, wait_until

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _children(pgid: int) -> list[tuple[int, str]]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,pgid=,args="], capture_output=True, text=True)
    rows = []
    for line in out.stdout.splitlines():
        pid, group, args = line.strip().split(None, 2)
        if int(group) == pgid:
            rows.append((int(pid), args))
    return rows


def test_make_run_starts_app_and_worker_and_one_ctrl_c_stops_both(tmp_path: Path):
    port = free_port()
    venv = BIN.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEBAPP_", "DATABASE_URL"))}
    env.update(
        WEBAPP_INSTANCE_PATH=str(tmp_path / "instance"),
        WEBAPP_PASSWORD_HASH_PROFILE="CHEAPEST",
        WEBAPP_TESTING="true",
        PYTHONUNBUFFERED="1",
    )
    log = open(tmp_path / "make.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            "make",
            "-f",
            str(ROOT / "Makefile"),
            "-o",
            f"{venv}/.runtime",
            f"VENV={venv}",
            f"PORT={port}",
            "run",
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    try:

        def up() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/login", timeout=2).ok
            except requests.RequestException:
                return False

        wait_until(up, "the app", timeout=180, interval=0.2)
        wait_until(
            lambda: (
                "worker" in (tmp_path / "make.log").read_text()
                and "started" in (tmp_path / "make.log").read_text()
            ),
            "the worker",
        )
        group = _children(proc.pid)
        assert any("flask" in a and "worker" in a for _, a in group), group
        assert any("gunicorn" in a for _, a in group), group
        os.killpg(proc.pid, signal.SIGINT)  # one Ctrl-C
        proc.wait(timeout=60)
        wait_until(lambda: not any(_alive(pid) for pid, _ in group), "every process to stop")
        text = (tmp_path / "make.log").read_text()
        assert "SIGINT: stopping after the attempts in hand" in text or "stopped" in text, text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
