"""A real local HTTP server speaking OpenAI's and Anthropic's wire formats, for the real SDKs to call.

It answers POST /v1/chat/completions, /v1/responses and /v1/messages with the documented JSON
and server-sent-event shapes, carrying the usage in `USAGE` (cached and reasoning tokens
included). Every answer gets a new response id unless `fixed_id` is set; `fail_next` answers
that many requests with a 500 first (the SDKs retry those). The model answered is the model
asked for with a date suffix, as the providers answer aliases.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL_SUFFIX = "-2024-07-18"
STREAM_CHUNKS = 40  # content pieces per stream: enough that a caller can stop half-way

USAGE = {
    "chat": {"prompt": 120, "cached": 100, "completion": 30, "reasoning": 12},
    "responses": {"input": 200, "cached": 150, "cache_write": 30, "output": 40, "reasoning": 25},
    "messages": {"input": 20, "cache_read": 1000, "cache_creation": 300, "output": 50},
}


@dataclass
class ProviderState:
    """What the tests steer and read: failures to answer first, a fixed id, the requests seen."""

    fail_next: int = 0
    fixed_id: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: Iterator[int] = field(default_factory=itertools.count)

    def next_id(self, prefix: str) -> str:
        return self.fixed_id or f"{prefix}{next(self.counter):08d}"


def chat_usage() -> dict[str, Any]:
    u = USAGE["chat"]
    return {
        "prompt_tokens": u["prompt"],
        "completion_tokens": u["completion"],
        "total_tokens": u["prompt"] + u["completion"],
        "prompt_tokens_details": {"cached_tokens": u["cached"], "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": u["reasoning"], "audio_tokens": 0},
    }


def responses_usage() -> dict[str, Any]:
    u = USAGE["responses"]
    return {
        "input_tokens": u["input"],
        "input_tokens_details": {"cached_tokens": u["cached"], "cache_write_tokens": u["cache_write"]},
        "output_tokens": u["output"],
        "output_tokens_details": {"reasoning_tokens": u["reasoning"]},
        "total_tokens": u["input"] + u["output"],
    }


def messages_usage(*, output: int) -> dict[str, Any]:
    u = USAGE["messages"]
    return {
        "input_tokens": u["input"],
        "cache_read_input_tokens": u["cache_read"],
        "cache_creation_input_tokens": u["cache_creation"],
        "output_tokens": output,
    }


def chat_completion(response_id: str, model: str) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": 1764900000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there.", "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": chat_usage(),
        "system_fingerprint": "fp_test",
    }


def chat_chunks(response_id: str, model: str, *, include_usage: bool) -> Iterator[tuple[str | None, Any]]:
    base = {"id": response_id, "object": "chat.completion.chunk", "created": 1764900000, "model": model}
    no_usage = {"usage": None} if include_usage else {}
    yield None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], **no_usage}
    for n in range(STREAM_CHUNKS):
        yield None, {**base, "choices": [{"index": 0, "delta": {"content": f"w{n} "}}], **no_usage}
    yield None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], **no_usage}
    if include_usage:
        yield None, {**base, "choices": [], "usage": chat_usage()}
    yield None, "[DONE]"


def response_object(response_id: str, model: str, *, status: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    output = (
        [
            {
                "id": "msg_out",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Hello there.", "annotations": []}],
            }
        ]
        if status == "completed"
        else []
    )
    return {
        "id": response_id,
        "object": "response",
        "created_at": 1764900000,
        "status": status,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


def responses_events(response_id: str, model: str) -> Iterator[tuple[str | None, Any]]:
    created = response_object(response_id, model, status="in_progress", usage=None)
    yield "response.created", {"type": "response.created", "sequence_number": 0, "response": created}
    for n in range(STREAM_CHUNKS):
        yield (
            "response.output_text.delta",
            {
                "type": "response.output_text.delta",
                "sequence_number": n + 1,
                "item_id": "msg_out",
                "output_index": 0,
                "content_index": 0,
                "delta": f"w{n} ",
                "logprobs": [],
            },
        )
    done = response_object(response_id, model, status="completed", usage=responses_usage())
    yield "response.completed", {"type": "response.completed", "sequence_number": STREAM_CHUNKS + 1, "response": done}


def message(response_id: str, model: str) -> dict[str, Any]:
    return {
        "id": response_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "Hello there."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": messages_usage(output=USAGE["messages"]["output"]),
    }


def message_events(response_id: str, model: str) -> Iterator[tuple[str | None, Any]]:
    start = {**message(response_id, model), "content": [], "stop_reason": None, "usage": messages_usage(output=1)}
    yield "message_start", {"type": "message_start", "message": start}
    yield (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    for n in range(STREAM_CHUNKS):
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"w{n} "}}
        yield "content_block_delta", delta
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": USAGE["messages"]["output"]},
        },
    )
    yield "message_stop", {"type": "message_stop"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read the state, not the log."""

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_events(self, events: Iterator[tuple[str | None, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for name, data in events:
                text = data if isinstance(data, str) else json.dumps(data)
                head = f"event: {name}\n" if name else ""
                self.wfile.write(f"{head}data: {text}\n\n".encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what an early stop looks like from here

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        state = self.server.state
        with state.lock:
            state.requests.append({"path": self.path, "body": body})
            failing = state.fail_next > 0
            state.fail_next -= 1 if failing else 0
        if failing:
            self._send_json(500, {"error": {"message": "try again", "type": "server_error"}})
            return
        model = f"{body.get('model', 'unknown')}{MODEL_SUFFIX}"
        stream = bool(body.get("stream"))
        if self.path.endswith("/chat/completions"):
            response_id = state.next_id("chatcmpl-")
            if stream:
                include = bool((body.get("stream_options") or {}).get("include_usage"))
                self._send_events(chat_chunks(response_id, model, include_usage=include))
            else:
                self._send_json(200, chat_completion(response_id, model))
        elif self.path.endswith("/responses"):
            response_id = state.next_id("resp_")
            if stream:
                self._send_events(responses_events(response_id, model))
            else:
                done = response_object(response_id, model, status="completed", usage=responses_usage())
                self._send_json(200, done)
        elif self.path.endswith("/messages"):
            response_id = state.next_id("msg_")
            if stream:
                self._send_events(message_events(response_id, model))
            else:
                self._send_json(200, message(response_id, model))
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ProviderState


@dataclass
class RunningProvider:
    """A started provider server: its root URL and its state."""

    url: str
    state: ProviderState

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"


@contextmanager
def running_provider() -> Iterator[RunningProvider]:
    """Serve on a free loopback port in a thread until the block ends."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = ProviderState()
    thread = threading.Thread(target=server.serve_forever, name="provider-server", daemon=True)
    thread.start()
    try:
        yield RunningProvider(url=f"http://127.0.0.1:{server.server_address[1]}", state=server.state)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
