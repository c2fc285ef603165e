"""A small Model Context Protocol server on stdio, for ``ac mcp``: JSON-RPC 2.0, one message a
line, the ``initialize`` handshake (protocol revisions 2024-11-05 to 2025-11-25), ``ping``,
``tools/list``, ``tools/call``, and notifications out (the Claude Code channel's).

Why not the official SDK: importing it takes about a second, and the SDK must be loaded before
it can answer anything, so lazy imports cannot help. Codex waits only 1 s
(``mcp_optional_startup_grace_ms``) for an optional MCP server and then starts the turn without
its tools. What ``ac mcp`` uses of MCP is this small, and a stdlib layer answers
``initialize`` in well under 100 ms. It also speaks the channel's notifications natively
(the SDK has no model for them). Tool calls run in threads of their own, so a long ``ask``
never holds up ``ping`` or a channel push.
"""

from __future__ import annotations

import inspect
import json
import sys
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO, TypeVar

    from .shapes import JSONObject

    F = TypeVar("F", bound=Callable[..., str])

#: The revisions reachable through ``initialize``, oldest first.
PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
#: At stdin's end, how long tool calls still running may finish and answer (the client may
#: still read: it sent its requests and closed its side).
DRAIN_SECONDS = 5.0

#: A parameter's annotation (a string: annotations are postponed) -> its JSON schema.
_SCHEMAS: dict[str, JSONObject] = {
    "str": {"type": "string"},
    "bool": {"type": "boolean"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "list[str]": {"type": "array", "items": {"type": "string"}},
}


class ToolError(Exception):
    """A tool's failure whose message the model should read (a result with ``isError``)."""


class _Tool:
    """One registered tool: its function, description and input schema."""

    def __init__(self, fn: Callable[..., str]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.description = inspect.cleandoc(fn.__doc__ or "")
        self.kinds: dict[str, str] = {}
        self.nullable: set[str] = set()
        self.required: list[str] = []
        properties: dict[str, object] = {}
        for param in inspect.signature(fn).parameters.values():
            kind = str(param.annotation)
            if kind.endswith(" | None"):
                kind = kind[: -len(" | None")]
                self.nullable.add(param.name)
            if kind not in _SCHEMAS:
                raise TypeError(f"tool {self.name}: no schema for {param.name}: {kind}")
            schema = dict(_SCHEMAS[kind])
            if param.default is inspect.Parameter.empty:
                self.required.append(param.name)
            elif param.default is not None:
                schema["default"] = param.default
            self.kinds[param.name] = kind
            properties[param.name] = schema
        self.schema: JSONObject = {"type": "object", "properties": properties}
        if self.required:
            self.schema["required"] = list(self.required)

    def listing(self) -> JSONObject:
        return {"name": self.name, "description": self.description, "inputSchema": self.schema}

    def arguments(self, given: object) -> dict[str, object]:
        """The call's arguments checked and converted as a model sends them (numbers and
        booleans as strings too); ToolError names what is wrong. Unknown names are ignored."""
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise ToolError("arguments must be an object")
        missing = [name for name in self.required if given.get(name) is None]
        if missing:
            raise ToolError("missing argument: " + ", ".join(missing))
        out: dict[str, object] = {}
        for name, kind in self.kinds.items():
            if name not in given:
                continue
            value = given[name]
            if value is None and name in self.nullable:
                out[name] = None
                continue
            converted = _convert(value, kind)
            if converted is None:
                raise ToolError(f"argument {name}: expected {_SCHEMAS[kind]['type']}")
            out[name] = converted
        return out


def _convert(value: object, kind: str) -> object:
    """``value`` as ``kind``, or None when it is not one."""
    if kind == "str":
        return value if isinstance(value, str) else None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, str) else ""
        return {"true": True, "false": False}.get(text)
    if kind in ("int", "float"):
        if isinstance(value, bool):
            return None
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                return None
        if not isinstance(value, (int, float)) or value != value:
            return None
        if kind == "float":
            return float(value)
        return int(value) if float(value).is_integer() else None
    if kind == "list[str]":
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    return None


class Server:
    """Tools registered with :meth:`tool`, served on stdio by :meth:`run`."""

    def __init__(self, name: str, instructions: str = "", version: str = "") -> None:
        self.name = name
        self.instructions = instructions
        self.version = version
        self.tools: dict[str, _Tool] = {}
        #: Declared under ``capabilities.experimental`` (e.g. ``claude/channel``).
        self.experimental: dict[str, JSONObject] = {}
        #: Client notifications to act on, by method (called on the reading thread).
        self.notifications: dict[str, Callable[[object], None]] = {}
        #: Set once ``initialize`` is answered: pushes wait for it.
        self.ready = threading.Event()
        #: Tool calls wait (at most ``calls_wait`` seconds) for this (the session's start).
        self.calls_wait_for: threading.Event | None = None
        self.calls_wait = 0.0
        self._out: BinaryIO = sys.stdout.buffer
        self._lock = threading.Lock()
        self._calls: set[threading.Thread] = set()

    def tool(self) -> Callable[[F], F]:
        """Register a function as a tool: its name, docstring and typed parameters."""

        def register(fn: F) -> F:
            self.tools[fn.__name__] = _Tool(fn)
            return fn

        return register

    def send(self, message: JSONObject) -> None:
        """Write one message (a line); OSError or ValueError once the client is gone."""
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            self._out.write(data)
            self._out.flush()

    def push(self, message: JSONObject) -> None:
        """Send a notification of ours, once the handshake is done."""
        self.ready.wait()
        self.send(message)

    def run(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """Serve until the client closes stdin (then let the tool calls under way answer, for
        at most :data:`DRAIN_SECONDS`), or the output breaks."""
        source = stdin if stdin is not None else sys.stdin.buffer
        if stdout is not None:
            self._out = stdout
        for raw in source:
            if not raw.strip():
                continue
            try:
                message = json.loads(raw)
            except ValueError:
                if not self._answer(None, error=(PARSE_ERROR, "parse error")):
                    return
                continue
            if not self._dispatch(message):
                return
        deadline = time.monotonic() + DRAIN_SECONDS
        with self._lock:
            running = list(self._calls)
        for thread in running:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _answer(
        self,
        request_id: object,
        result: JSONObject | None = None,
        error: tuple[int, str] | None = None,
    ) -> bool:
        reply: JSONObject = {"jsonrpc": "2.0", "id": request_id}
        if error is not None:
            reply["error"] = {"code": error[0], "message": error[1]}
        else:
            reply["result"] = result if result is not None else {}
        try:
            self.send(reply)
        except (OSError, ValueError):
            return False
        return True

    def _dispatch(self, message: object) -> bool:
        """Handle one client message; False once the client cannot be written to."""
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            if isinstance(message, dict) and ("result" in message or "error" in message):
                return True  # an answer to a request we never send: ignored
            return self._answer(None, error=(INVALID_REQUEST, "invalid request"))
        method, params = str(message["method"]), message.get("params")
        if "id" not in message:  # a notification
            act = self.notifications.get(method)
            if act is not None:
                act(params)
            return True
        request_id = message["id"]
        if method == "initialize":
            ok = self._answer(request_id, self._initialize(params))
            self.ready.set()
            return ok
        if method == "ping":
            return self._answer(request_id, {})
        if method == "tools/list":
            return self._answer(request_id, {"tools": [t.listing() for t in self.tools.values()]})
        if method == "tools/call":
            thread = threading.Thread(
                target=self._call, args=(request_id, params), name="ac-mcp-tool", daemon=True
            )
            with self._lock:
                self._calls.add(thread)
            thread.start()
            return True
        return self._answer(request_id, error=(METHOD_NOT_FOUND, f"method not found: {method}"))

    def _initialize(self, params: object) -> JSONObject:
        asked = params.get("protocolVersion") if isinstance(params, dict) else None
        version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[-1]
        capabilities: JSONObject = {"tools": {"listChanged": False}}
        if self.experimental:
            capabilities["experimental"] = dict(self.experimental)
        result: JSONObject = {
            "protocolVersion": version,
            "capabilities": capabilities,
            "serverInfo": {"name": self.name, "version": self.version},
        }
        if self.instructions:
            result["instructions"] = self.instructions
        return result

    def _call(self, request_id: object, params: object) -> None:
        fields = params if isinstance(params, dict) else {}
        name = fields.get("name")
        found = self.tools.get(name) if isinstance(name, str) else None
        if self.calls_wait_for is not None:
            self.calls_wait_for.wait(self.calls_wait)
        try:
            if found is None:
                raise ToolError(f"unknown tool: {name}")
            text, failed = found.fn(**found.arguments(fields.get("arguments"))), False
        except ToolError as e:
            text, failed = str(e), True
        except Exception as e:  # a bug of ours: the model gets one line, stderr the kind
            sys.stderr.write(f"ac mcp: tool {name} failed: {type(e).__name__}: {e}\n")
            text, failed = f"the {name} tool failed ({type(e).__name__})", True
        result: JSONObject = {"content": [{"type": "text", "text": text}], "isError": failed}
        try:
            self._answer(request_id, result)
        finally:
            with self._lock:
                self._calls.discard(threading.current_thread())
