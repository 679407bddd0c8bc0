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
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tests.fakes.base import USAGE_HEADER, FakeServer, JsonHandler, parse_fields, reply_text, words

__all__ = ["USAGE_HEADER", "AnthropicUsage", "FakeAnthropicServer"]


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
        return cls(**parse_fields(text))

    def header(self) -> dict[str, str]:
        """``extra_headers=`` for an ``anthropic`` call that should report this usage."""
        text = f"input={self.input},output={self.output}"
        text += f",cache_read={self.cache_read},cache_write={self.cache_write}"
        return {USAGE_HEADER: text}


class FakeAnthropicServer(FakeServer):
    """The server; a context manager. ``base_url`` has no path (the ``anthropic`` client
    adds ``/v1/messages``); ``requests`` holds every request body received, in order."""

    usage_type = AnthropicUsage
    thread_name = "fake-anthropic-server"

    def __init__(self, usage: Mapping[str, AnthropicUsage] | None = None) -> None:
        super().__init__(usage)

    @property
    def base_url(self) -> str:
        return self.origin


class _Handler(JsonHandler):
    fake: FakeAnthropicServer
    server_version = "fake-anthropic/1"
    request_id_header = "request-id"

    def error_body(self, kind: str, message: str) -> dict[str, Any]:
        return _error(kind, message)

    def do_POST(self) -> None:
        request = self.read_request()
        if request is None:
            return
        path, body, number = request
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
        text = reply_text(body.get("messages"))
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
        for word in words(text):
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
        self._sse([f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                   for name, data in events])


FakeAnthropicServer.handler = _Handler


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


if __name__ == "__main__":  # a manual check: python -m tests.fakes.anthropic_server
    with FakeAnthropicServer({"claude-sonnet-4-5": AnthropicUsage(10, 5, 100, 20)}) as srv:
        print(srv.base_url, flush=True)
        time.sleep(3600)
