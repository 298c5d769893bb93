"""A real webhook receiver for tests: http.server on 127.0.0.1 in a thread, verifying every
request's signature with standardwebhooks' own verifier."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Received:
    msg_id: str
    headers: dict[str, str]
    body: str
    payload: dict[str, Any] | None
    verified: bool
    at: float


@dataclass
class Receiver:
    """``answer(n, received)`` gives the status for the n-th request (1-based); default 200.
    ``delay_s`` makes each answer wait (to catch a worker mid-delivery)."""

    secrets: list[str] = field(default_factory=list)
    answer: Callable[[int, Received], int] = lambda n, r: 200
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length).decode()
                headers = {k.lower(): v for k, v in self.headers.items()}
                payload, verified = None, False
                for secret in receiver.secrets:
                    try:
                        payload = Webhook(secret).verify(body, headers)
                        verified = True
                        break
                    except WebhookVerificationError:
                        continue
                got = Received(
                    headers.get("webhook-id", ""), headers, body, payload, verified, time.time()
                )
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                with receiver.lock:
                    receiver.received.append(got)
                    n = len(receiver.received)
                status = receiver.answer(n, got) if verified else 401
                out = json.dumps({"n": n}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def ids(self) -> list[str]:
        with self.lock:
            return [r.msg_id for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
