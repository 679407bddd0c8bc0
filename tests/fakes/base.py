"""What the fake model servers share: a threaded HTTP server on 127.0.0.1 that records every
request body, usage chosen per request (a header) or per model (a table), and the wire
helpers of a JSON API with server-sent events.

Only the standard library is used: the instrumentation venvs install nothing for it.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

USAGE_HEADER = "X-Fake-Usage"


def parse_fields(text: str) -> dict[str, int]:
    """``prompt=100,completion=50`` -> ``{"prompt": 100, "completion": 50}``."""
    fields = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        fields[key.strip()] = int(value)
    return fields


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client dropping its idle keep-alive connection is normal, not worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class FakeServer:
    """A fake model server; a context manager. ``requests`` holds every request body
    received, in order (guarded by ``_lock``). A subclass names its ``handler`` class (a
    :class:`JsonHandler`), its usage type (a class with ``parse_header``) and its
    ``base_url``."""

    handler: ClassVar[type[BaseHTTPRequestHandler]]
    usage_type: ClassVar[Any]
    thread_name: ClassVar[str] = "fake-model-server"

    def __init__(self, usage: Mapping[str, Any] | None = None) -> None:
        self.usage: dict[str, Any] = dict(usage or {})  # read-only once started
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []  # guarded by _lock
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        handler = type("_BoundHandler", (self.handler,), {"fake": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the handler asks -------------------------------------------------------

    def _record(self, path: str, body: dict[str, Any]) -> int:
        """Keep a request; its number (1 for the first)."""
        with self._lock:
            self._requests.append({"path": path, "body": body})
            return len(self._requests)

    def _usage_for(self, model: str, header: str | None) -> Any:
        if header:
            return self.usage_type.parse_header(header)
        return self.usage.get(model)


class JsonHandler(BaseHTTPRequestHandler):
    """A JSON API's request handling: the body read as JSON, JSON and SSE answers."""

    fake: FakeServer  # set on the subclass made per server
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients expect
    request_id_header = "x-request-id"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass  # quiet: pytest shows failures, not access logs

    def error_body(self, kind: str, message: str) -> dict[str, Any]:
        raise NotImplementedError

    def read_request(self) -> tuple[str, dict[str, Any], int] | None:
        """(path, body, request number), the request recorded; None once a 400 has been
        answered for a body that is not JSON."""
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._json(400, self.error_body("invalid_request_error", "body is not JSON"))
            return None
        path = self.path.split("?", 1)[0]
        return path, body, self.fake._record(path, body)

    def _json(self, status: int, doc: dict[str, Any]) -> None:
        raw = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header(self.request_id_header, "req_fake")
        self.end_headers()
        self.wfile.write(raw)

    def _sse(self, events: list[bytes]) -> None:
        """A 200 event stream of already encoded events (chunked, as the real APIs)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def reply_text(messages: Any) -> str:
    """The fake's reply to a conversation: its last message's text, quoted."""
    last = ""
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        content = messages[-1].get("content")
        last = content if isinstance(content, str) else ""
    return f"fake reply to: {last[:40]}".strip()


def words(text: str) -> list[str]:
    """``text`` in the pieces a stream sends: words, each after the first with its space."""
    pieces = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(pieces)]
