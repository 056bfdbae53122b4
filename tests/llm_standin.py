"""A loopback stand-in for an OpenAI-compatible chat endpoint, shared by the LLM tests.

``loopback_http_server`` starts a threaded ``pytest-httpserver`` bound to 127.0.0.1; ``FakeLLM``
answers ``/v1/chat/completions`` on it from a script of replies, recording every request.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

SECRET = "sk-test-DO-NOT-LEAK-4f9a1c"


def completion(content: str | None, usage: tuple[int, int] | None = (100, 50)) -> Response:
    body: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "stand-in",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
    }
    if usage is not None:
        body["usage"] = {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
        }
    return Response(json.dumps(body), status=200, content_type="application/json")


def is_caption_request(body: dict[str, Any]) -> bool:
    return any(
        isinstance(m["content"], list)
        and any(part.get("type") == "image_url" for part in m["content"])
        for m in body["messages"]
    )


def image_tag(body: dict[str, Any]) -> str:
    """A short tag that differs between images, so captions differ between items."""
    for m in body["messages"]:
        if isinstance(m["content"], list):
            for part in m["content"]:
                if part.get("type") == "image_url":
                    return hashlib.sha256(part["image_url"]["url"].encode()).hexdigest()[:6]
    return "none"


def captions_json(tag: str, captions: list[str] | None = None, **over: Any) -> str:
    data = {
        "captions": captions
        or [
            f"Aerial view {tag} of flooded fields south of a city.",
            f"Brown water {tag} covers farmland in the centre of the scene.",
            f"Three roads {tag} cross the inundated plain from left to right.",
            f"A river {tag} runs along the top edge, bordered by green vegetation.",
            f"Scattered buildings {tag} stand out in the lower left corner.",
        ],
        "tags": ["flood", "farmland", "river"],
        "location": "Valencia, Spain",
        "modality": "optical",
        "satellite": "Sentinel-2",
        "sensor": "MSI",
        "resolution_class": "high",
    }
    data.update(over)
    return json.dumps(data)


def good(body: dict[str, Any]) -> Response:
    if is_caption_request(body):
        return completion(captions_json(image_tag(body)))
    return completion("Sentinel-2 saw floods near Valencia in November 2024.", usage=(300, 20))


class FakeLLM:
    """Scripted OpenAI-compatible endpoint: ``script`` replies first, then ``default``."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.requests: list[dict[str, Any]] = []
        self.script: list[Callable[[dict[str, Any]], Response]] = []
        self.default: Callable[[dict[str, Any]], Response] = good
        self.latency_s = 0.0
        self._lock = threading.Lock()
        server.expect_request("/v1/chat/completions", method="POST").respond_with_handler(
            self._handle
        )

    @property
    def url(self) -> str:
        return self.server.url_for("/v1")

    def _handle(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        with self._lock:
            self.requests.append({"body": body, "headers": dict(request.headers)})
            behaviour = self.script.pop(0) if self.script else self.default
        if self.latency_s:
            time.sleep(self.latency_s)
        return behaviour(body)

    def caption_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if is_caption_request(r["body"])]


def png(seed: int, size: int = 48) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@contextmanager
def loopback_http_server() -> Iterator[HTTPServer]:
    """A started threaded server on 127.0.0.1 (scope it per module: stopping one takes 0.5 s)."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    try:
        yield server
    finally:
        server.clear()
        server.stop()


def reset(server: HTTPServer) -> HTTPServer:
    """``server`` with no handlers and an empty log, for the next test."""
    server.clear()
    server.clear_all_handlers()
    return server
