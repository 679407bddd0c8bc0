"""A tiny OpenAI-compatible HTTP server on 127.0.0.1, for driving real instrumentation.

It answers the three calls our instrumentation tests make, with a ``usage`` block the
test chose, so the test knows the exact token numbers the instrumentation will report:

- ``POST /v1/chat/completions``: a JSON completion, or with ``"stream": true`` an SSE
  stream of ``chat.completion.chunk`` objects that ends with a usage chunk (``choices: []``)
  when ``stream_options.include_usage`` is set, then ``data: [DONE]`` -- as OpenAI does.
- ``POST /v1/embeddings``: one vector per input, ``float`` or ``base64`` as asked
  (the ``openai`` client asks for base64 by default), with ``usage.prompt_tokens``.

Token counts come, first match wins, from an ``X-Fake-Usage`` request header
(``prompt=100,completion=50,cached=20,reasoning=4``; the ``openai`` client sends it with
``extra_headers=...``), else from the server's table keyed by the requested model. A model
in neither answers 404 ``model_not_found``, as OpenAI does, so a test can make a call fail.

Usage::

    with fake_openai_server({"gpt-4o": Usage(100, 50, cached=20)}) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)

Only the standard library is used: the instrumentation venvs install nothing for it.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.fakes.base import USAGE_HEADER, FakeServer, JsonHandler, parse_fields, reply_text, words

__all__ = ["USAGE_HEADER", "FakeOpenAIServer", "Usage", "fake_openai_server"]

#: Chat answers name a dated snapshot of the requested model, as OpenAI does
#: (``gpt-4o`` -> ``gpt-4o-2024-08-06``); embeddings answer with the requested name.
SNAPSHOT_SUFFIX = "-2024-08-06"
EMBEDDING_DIMENSIONS = 8
_CREATED = 1_730_000_000  # a fixed timestamp: responses are byte-for-byte deterministic


@dataclass(frozen=True)
class Usage:
    """The usage one call reports. ``cached`` and ``reasoning`` are *part of* prompt and
    completion respectively, as in OpenAI's ``prompt_tokens_details.cached_tokens``."""

    prompt: int
    completion: int = 0
    cached: int = 0
    reasoning: int = 0

    def chat_json(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
            "prompt_tokens_details": {"cached_tokens": self.cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def embeddings_json(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt, "total_tokens": self.prompt}

    @classmethod
    def parse_header(cls, text: str) -> Usage:
        """``prompt=100,completion=50,cached=20`` -> ``Usage(100, 50, cached=20)``."""
        return cls(**parse_fields(text))

    def header(self) -> dict[str, str]:
        """``extra_headers=`` for an ``openai`` call that should report this usage."""
        text = f"prompt={self.prompt},completion={self.completion}"
        text += f",cached={self.cached},reasoning={self.reasoning}"
        return {USAGE_HEADER: text}


class FakeOpenAIServer(FakeServer):
    """The server; a context manager. ``base_url`` ends in ``/v1``; ``requests`` holds
    every request body received, in order."""

    usage_type = Usage
    thread_name = "fake-openai-server"

    def __init__(
        self,
        usage: Mapping[str, Usage] | None = None,
        *,
        snapshot_suffix: str = SNAPSHOT_SUFFIX,
    ) -> None:
        super().__init__(usage)
        self.snapshot_suffix = snapshot_suffix

    @property
    def base_url(self) -> str:
        return self.origin + "/v1"


@contextmanager
def fake_openai_server(
    usage: Mapping[str, Usage] | None = None, *, snapshot_suffix: str = SNAPSHOT_SUFFIX
) -> Iterator[str]:
    """Run a :class:`FakeOpenAIServer` for the ``with`` block; yields its base URL."""
    with FakeOpenAIServer(usage, snapshot_suffix=snapshot_suffix) as server:
        yield server.base_url


class _Handler(JsonHandler):
    fake: FakeOpenAIServer
    server_version = "fake-openai/1"

    def error_body(self, kind: str, message: str) -> dict[str, Any]:
        return _error(kind, message, None)

    def do_POST(self) -> None:
        request = self.read_request()
        if request is None:
            return
        path, body, number = request
        if path == "/v1/chat/completions":
            self._chat(body, number)
        elif path == "/v1/embeddings":
            self._embeddings(body)
        else:
            self._json(404, _error("invalid_request_error", f"unknown path {path}", None))

    def _usage_or_404(self, model: str) -> Usage | None:
        try:
            usage = self.fake._usage_for(model, self.headers.get(USAGE_HEADER))
        except (TypeError, ValueError) as exc:
            self._json(400, _error("invalid_request_error", f"bad {USAGE_HEADER}: {exc}", None))
            return None
        if usage is None:
            message = f"The model `{model}` does not exist or you do not have access to it."
            self._json(404, _error("invalid_request_error", message, "model_not_found"))
        return usage

    def _chat(self, body: dict[str, Any], number: int) -> None:
        model = str(body.get("model", ""))
        usage = self._usage_or_404(model)
        if usage is None:
            return
        completion_id = f"chatcmpl-fake{number}"
        response_model = model + self.fake.snapshot_suffix
        text = reply_text(body.get("messages"))
        if not body.get("stream"):
            self._json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": _CREATED,
                    "model": response_model,
                    "system_fingerprint": "fp_fake",
                    "service_tier": "default",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text, "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage.chat_json(),
                },
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(choices: list, usage_json: Any = None) -> dict[str, Any]:
            out = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": _CREATED,
                "model": response_model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
            }
            if include_usage:
                out["usage"] = usage_json  # null on every chunk but the last, as OpenAI
            return out

        def delta(content: dict[str, Any], finish: str | None = None) -> list:
            return [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}]

        events = [chunk(delta({"role": "assistant", "content": ""}))]
        events += [chunk(delta({"content": word})) for word in words(text)]
        events.append(chunk(delta({}, "stop")))
        if include_usage:
            events.append(chunk([], usage.chat_json()))
        self._sse([f"data: {json.dumps(event)}\n\n".encode() for event in events]
                  + [b"data: [DONE]\n\n"])

    def _embeddings(self, body: dict[str, Any]) -> None:
        model = str(body.get("model", ""))
        usage = self._usage_or_404(model)
        if usage is None:
            return
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(inputs):
            vector = _vector(str(item))
            encoded: Any = vector
            if as_base64:
                raw = struct.pack(f"<{len(vector)}f", *vector)
                encoded = base64.b64encode(raw).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        self._json(
            200, {"object": "list", "data": data, "model": model, "usage": usage.embeddings_json()}
        )


FakeOpenAIServer.handler = _Handler


def _error(kind: str, message: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _vector(text: str) -> list[float]:
    # Deterministic and cheap; values exactly representable in float32.
    seed = sum(text.encode()) % 97
    return [((seed + i) % 16) / 16.0 for i in range(EMBEDDING_DIMENSIONS)]


if __name__ == "__main__":  # a manual check: python -m tests.fakes.openai_server
    with FakeOpenAIServer({"gpt-4o": Usage(10, 5, cached=2)}) as srv:
        print(srv.base_url, flush=True)
        time.sleep(3600)
