"""A webhook receiver on loopback for the alert tests (tests/unit/hub/test_hub_alerts.py, test_api_webhook_names.py,
tests/integration/hub/test_hub_alerts_live.py, test_hub_ownership_live.py): a real HTTP server in a thread that
keeps every JSON body posted to it and answers each with the next of ``answers``, then ``status``."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class WebhookReceiver:
    """What the receiver got (``received``, decoded) and how it answers: ``answers`` first, then ``status``."""

    url: str = ""
    status: int = 200
    answers: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def webhook_receiver(path: str = "", *, status: int = 200) -> Iterator[WebhookReceiver]:
    """A :class:`WebhookReceiver` listening on 127.0.0.1 (a free port), its ``url`` ending in ``path``."""
    receiver = WebhookReceiver(status=status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(receiver.answers.pop(0) if receiver.answers else receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
