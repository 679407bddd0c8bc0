"""A tiny Anthropic Messages API server on 127.0.0.1, for driving real instrumentation.

It answers ``POST /v1/messages`` with a ``usage`` block the test chose, so the test knows
the exact token numbers the instrumentation will report:

- a JSON ``message``, or with ``"stream": true`` the SSE events Anthropic sends
  (``message_start`` with the input and cache usage and a placeholder ``output_tokens``,
  ``content_block_start``, ``content_block_delta``..., ``content_block_stop``,
  ``message_delta`` with the final cumulative usage, input and cache included, as the API
  sends it today, ``message_stop``);
- ``usage: {input_tokens, output_tokens, cache_read_input_tokens,
  cache_creation_input_tokens}``. As in Anthropic's API, ``input_tokens`` does **not**
  include the cache tokens: the prompt is ``input + cache_read + cache_write``.

Token counts come, first match wins, from an ``X-Fake-Usage`` request header
(``input=100,output=50,cache_read=20,cache_write=4``; the ``anthropic`` client sends it
with ``extra_headers=...``), else from the server's table keyed by the requested model. A
model in neither answers 404 ``not_found_error``, as Anthropic does.

Usage::

    with FakeAnthropicServer({"claude-sonnet-4-5": AnthropicUsage(100, 50)}) as server:
        client = anthropic.Anthropic(base_url=server.base_url, api_key="sk-ant-test",
                                     max_retries=0)

Only the standard library is used: the instrumentation venvs install nothing for it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.openai_server import _Server

USAGE_HEADER = "X-Fake-Usage"


@dataclass(frozen=True)
class AnthropicUsage:
    """The usage one call reports, as Anthropic counts it: ``input`` excludes the cache."""

    input: int
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def json(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input,
            "output_tokens": self.output,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation_input_tokens": self.cache_write,
        }

    @classmethod
    def parse_header(cls, text: str) -> AnthropicUsage:
        """``input=100,output=50,cache_read=20`` -> ``AnthropicUsage(100, 50, 20)``."""
        fields = {}
        for part in text.split(","):
            key, _, value = part.partition("=")
            fields[key.strip()] = int(value)
        return cls(**fields)

    def header(self) -> dict[str, str]:
        """``extra_headers=`` for an ``anthropic`` call that should report this usage."""
        text = f"input={self.input},output={self.output}"
        text += f",cache_read={self.cache_read},cache_write={self.cache_write}"
        return {USAGE_HEADER: text}


class FakeAnthropicServer:
    """The server; a context manager. ``base_url`` has no path (the ``anthropic`` client
    adds ``/v1/messages``); ``requests`` holds every request body received, in order."""

    def __init__(self, usage: Mapping[str, AnthropicUsage] | None = None) -> None:
        self.usage: dict[str, AnthropicUsage] = dict(usage or {})  # read-only once started
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []  # guarded by _lock
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeAnthropicServer:
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-anthropic-server",
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

    def __enter__(self) -> FakeAnthropicServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, path: str, body: dict[str, Any]) -> int:
        with self._lock:
            self._requests.append({"path": path, "body": body})
            return len(self._requests)

    def _usage_for(self, model: str, header: str | None) -> AnthropicUsage | None:
        if header:
            return AnthropicUsage.parse_header(header)
        return self.usage.get(model)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAnthropicServer  # set on the subclass made per server
    protocol_version = "HTTP/1.1"
    server_version = "fake-anthropic/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._json(400, _error("invalid_request_error", "body is not JSON"))
            return
        path = self.path.split("?", 1)[0]
        number = self.fake._record(path, body)
        if path != "/v1/messages":
            self._json(404, _error("not_found_error", f"unknown path {path}"))
            return
        model = str(body.get("model", ""))
        try:
            usage = self.fake._usage_for(model, self.headers.get(USAGE_HEADER))
        except (TypeError, ValueError) as exc:
            self._json(400, _error("invalid_request_error", f"bad {USAGE_HEADER}: {exc}"))
            return
        if usage is None:
            self._json(404, _error("not_found_error", f"model: {model}"))
            return
        text = _reply_text(body.get("messages"))
        message = {
            "id": f"msg_fake{number}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage.json(),
        }
        if not body.get("stream"):
            self._json(200, message)
            return
        start = {**message, "content": [], "stop_reason": None}
        start["usage"] = {**usage.json(), "output_tokens": 1}  # as Anthropic: a placeholder
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start}),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
        ]
        for word in _words(text):
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": word},
                    },
                )
            )
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": usage.json(),  # cumulative, as Anthropic now sends it
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        self._sse(events)

    def _json(self, status: int, doc: dict[str, Any]) -> None:
        raw = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("request-id", "req_fake")
        self.end_headers()
        self.wfile.write(raw)

    def _sse(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for name, data in events:
            self._chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _reply_text(messages: Any) -> str:
    last = ""
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        content = messages[-1].get("content")
        last = content if isinstance(content, str) else ""
    return f"fake reply to: {last[:40]}".strip()


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


if __name__ == "__main__":  # a manual check: python -m tests.fakes.anthropic_server
    with FakeAnthropicServer({"claude-sonnet-4-5": AnthropicUsage(10, 5, 100, 20)}) as srv:
        print(srv.base_url, flush=True)
        time.sleep(3600)
