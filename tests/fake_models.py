"""A fake model endpoint for the real agent CLIs: Anthropic, OpenAI Responses and Gemini.

One stdlib HTTP server in a thread answers all three vendors' streaming APIs and records every
request body, so a test can assert what the model *received* (hook lines, tool lists, skill
descriptions). Replies follow a stateless rule on the request, so side requests the CLIs make
(titles, routing, token counts) get a harmless answer too:

- the last user turn carries a tool result: answer the text ``DONE``;
- the last user text contains ``RUN: <shell command>``: call the CLI's shell tool with it;
- the prompt says ``CALL: <tool> <JSON arguments>`` (several joined by `` THEN ``; Anthropic
  only) and the request offers the next one: call it, one step per tool result (e.g. Claude
  Code's ``ToolSearch``, then the deferred MCP tool it loaded);
- otherwise: answer the text ``OK``.

    Anthropic  POST /v1/messages[?beta=true]               (ANTHROPIC_BASE_URL=<url>)
    OpenAI     POST /v1/responses                          (a Codex model_providers entry)
    Gemini     POST /v1beta/models/M:streamGenerateContent?alt=sse, :generateContent,
               :countTokens                                (GOOGLE_GEMINI_BASE_URL=<url>)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
import json
import re
import threading
import time

RUN = re.compile(r"RUN: (.+)")
CALL = re.compile(r"(\S+) (\{.*?\})(?: THEN |$)")


@dataclass
class Request:
    vendor: str  # "anthropic" | "openai" | "gemini"
    path: str
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)

    @property
    def text(self) -> str:
        """Everything in the body, as JSON text (for "did the model receive X" checks)."""
        return json.dumps(self.body, ensure_ascii=False)

    @property
    def tool_names(self) -> list[str]:
        names: list[str] = []
        for tool in self.body.get("tools") or []:
            if self.vendor == "gemini":
                names += [d.get("name", "") for d in tool.get("functionDeclarations") or []]
            else:
                name = tool.get("name") or (tool.get("function") or {}).get("name", "")
                names.append(name)
                # OpenAI Responses "namespace" tools (Codex groups MCP servers' tools so).
                names += [f"{name}.{t.get('name', '')}" for t in tool.get("tools") or []]
        return names

    @property
    def is_agent_turn(self) -> bool:
        """A request of the agent loop (it offers tools), not a side request."""
        return bool(self.tool_names)


class FakeModels:
    """The server. ``url`` is its base; ``requests`` every request so far."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        #: ``CALL:`` prompts → how many of their steps were served.
        self.progress: dict[str, int] = {}
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        handler = type("Handler", (_Handler,), {"models": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeModels:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def record(self, request: Request) -> None:
        with self.changed:
            self.requests.append(request)
            self.changed.notify_all()

    def agent_turns(self, vendor: str, since: int = 0) -> list[Request]:
        with self.lock:
            return [r for r in self.requests[since:] if r.vendor == vendor and r.is_agent_turn]

    def wait_for(self, pred: Any, timeout: float) -> Request | None:
        """The first request (recorded from now on or before) matching ``pred``, or None."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for r in self.requests:
                    if pred(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(left)


# --- the reply rule ----------------------------------------------------------------------------


def _last_user_parts(vendor: str, body: dict[str, Any]) -> tuple[str, bool]:
    """(text of the last user turn, whether it holds a tool result)."""
    if vendor == "anthropic":
        msgs = [m for m in body.get("messages") or [] if m.get("role") == "user"]
        if not msgs:
            return "", False
        content = msgs[-1].get("content")
        if isinstance(content, str):
            return content, False
        text = " ".join(str(b.get("text", "")) for b in content if b.get("type") == "text")
        return text, any(b.get("type") == "tool_result" for b in content)
    if vendor == "openai":
        items = body.get("input") or []
        if items and items[-1].get("type") == "function_call_output":
            return "", True
        for item in reversed(items):
            if item.get("type") in (None, "message") and item.get("role") == "user":
                content = item.get("content")
                if isinstance(content, str):
                    return content, False
                return " ".join(str(c.get("text", "")) for c in content or []), False
        return "", False
    contents = body.get("contents") or []
    if not contents:
        return "", False
    parts = contents[-1].get("parts") or []
    if any("functionResponse" in p for p in parts):
        return "", True
    return " ".join(str(p.get("text", "")) for p in parts), False


def reply_for(
    request: Request, progress: dict[str, int] | None = None
) -> tuple[str, str | None, dict[str, Any] | None]:
    """(text, tool name, tool arguments): what the fake model answers."""
    step = _next_call(request, progress if progress is not None else {})
    if step is not None:
        return "", step[0], step[1]
    text, tool_result = _last_user_parts(request.vendor, request.body)
    if tool_result:
        return "DONE", None, None
    match = RUN.search(text)
    if match and request.is_agent_turn:
        command = match.group(1).strip()
        tool = _shell_tool(request)
        if tool is not None:
            return "", tool[0], tool[1](command)
    return "OK", None, None


def _next_call(request: Request, progress: dict[str, int]) -> tuple[str, dict[str, Any]] | None:
    """The next step of a ``CALL: ...`` prompt, if the request offers its tool. ``progress``
    counts the steps served per prompt (Claude Code merges a turn's messages, so counting
    tool results in the request cannot tell the steps apart)."""
    if request.vendor != "anthropic" or not request.is_agent_turn:
        return None
    prompt = ""
    for msg in request.body.get("messages") or []:
        if msg.get("role") != "user":
            continue
        content = msg.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for block in blocks or []:
            text = str(block.get("text", "")) if block.get("type") == "text" else ""
            if "CALL: " in text:
                prompt = text
    if not prompt:
        return None
    steps = CALL.findall(prompt.split("CALL: ", 1)[1].strip())
    done = progress.get(prompt, 0)
    if done < len(steps) and steps[done][0] in request.tool_names:
        progress[prompt] = done + 1
        return steps[done][0], json.loads(steps[done][1])
    return None


def _shell_tool(request: Request) -> tuple[str, Any] | None:
    """The CLI's shell tool and how to build its arguments from a command line."""
    for tool in request.body.get("tools") or []:
        decls = tool.get("functionDeclarations") if request.vendor == "gemini" else [tool]
        for decl in decls or []:
            name = decl.get("name", "")
            schema = (
                decl.get("input_schema")
                or decl.get("parameters")
                or decl.get("parametersJsonSchema")
                or {}
            )
            props = schema.get("properties") or {}
            if name in ("Bash", "run_shell_command", "shell_command"):
                return name, lambda c: {"command": c}
            if name == "exec_command" and "cmd" in props:
                return name, lambda c: {"cmd": c}
            if name == "shell" and (props.get("command") or {}).get("type") == "array":
                return name, lambda c: {"command": ["bash", "-lc", c]}
    return None


# --- the wire formats --------------------------------------------------------------------------


def _sse(events: list[tuple[str | None, dict[str, Any]]]) -> bytes:
    out = []
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        out.append(f"{head}data: {json.dumps(data)}\n\n")
    return "".join(out).encode()


def anthropic_stream(
    model: str, text: str, tool: str | None, args: dict[str, Any] | None
) -> bytes:
    usage = {"input_tokens": 10, "output_tokens": 1}
    events: list[tuple[str | None, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": usage,
                },
            },
        )
    ]
    if tool:
        block = {"type": "tool_use", "id": f"toolu_{int(time.time() * 1e6)}", "name": tool}
        events += [
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {**block, "input": {}},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": json.dumps(args)},
                },
            ),
        ]
    else:
        events += [
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
            ),
        ]
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": "tool_use" if tool else "end_turn",
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": 1},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return _sse(events)


def anthropic_json(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }


def openai_stream(text: str, tool: str | None, args: dict[str, Any] | None) -> bytes:
    rid = f"resp_{int(time.time() * 1e6)}"
    if tool:
        item: dict[str, Any] = {
            "type": "function_call",
            "id": "fc_" + rid,
            "call_id": "call_" + rid,
            "name": tool,
            "arguments": json.dumps(args),
        }
    else:
        item = {
            "type": "message",
            "id": "msg_" + rid,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
    usage = {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 1,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 11,
    }
    return _sse(
        [
            ("response.created", {"type": "response.created", "response": {"id": rid}}),
            ("response.output_item.done", {"type": "response.output_item.done", "item": item}),
            (
                "response.completed",
                {"type": "response.completed", "response": {"id": rid, "usage": usage}},
            ),
        ]
    )


def gemini_chunk(text: str, tool: str | None, args: dict[str, Any] | None) -> dict[str, Any]:
    part: dict[str, Any] = (
        {"functionCall": {"name": tool, "args": args}} if tool else {"text": text}
    )
    return {
        "candidates": [
            {"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 1,
            "totalTokenCount": 11,
        },
        "modelVersion": "fake",
    }


class _Handler(BaseHTTPRequestHandler):
    models: FakeModels
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def do_GET(self) -> None:
        # Model lists and health checks: an empty, valid answer.
        if "models" in self.path:
            self._json({"data": [], "models": [], "object": "list"})
        else:
            self._json({})

    def do_HEAD(self) -> None:
        self._send(200, b"", "text/plain")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"raw": raw.decode(errors="replace")}
        path = self.path
        if "/messages" in path:
            vendor = "anthropic"
        elif "/responses" in path or "/chat/completions" in path:
            vendor = "openai"
        elif ":" in path and "/models/" in path:
            vendor = "gemini"
        else:
            self._json({})
            return
        request = Request(vendor, path, body if isinstance(body, dict) else {"value": body})
        self.models.record(request)
        if vendor == "anthropic":
            if path.split("?")[0].endswith("/count_tokens"):
                self._json({"input_tokens": 10})
                return
            model = str(body.get("model") or "claude-fake")
            with self.models.lock:
                text, tool, args = reply_for(request, self.models.progress)
            if body.get("stream"):
                self._send(200, anthropic_stream(model, text, tool, args), "text/event-stream")
            else:
                self._json(anthropic_json(model, text or "OK"))
        elif vendor == "openai":
            text, tool, args = reply_for(request)
            self._send(200, openai_stream(text, tool, args), "text/event-stream")
        elif ":countTokens" in path:
            self._json({"totalTokens": 10})
        elif ":streamGenerateContent" in path:
            text, tool, args = reply_for(request)
            self._send(200, _sse([(None, gemini_chunk(text, tool, args))]), "text/event-stream")
        else:  # :generateContent (routing, next-speaker checks): a JSON-ish text answer
            wants_json = "responseJsonSchema" in json.dumps(body.get("generationConfig") or {})
            answer = (
                json.dumps(
                    {
                        "reasoning": "fake",
                        "next_speaker": "user",
                        "complexity_reasoning": "fake",
                        "complexity_score": 1,
                    }
                )
                if wants_json
                else "OK"
            )
            self._json(gemini_chunk(answer, None, None))
