"""Process metrics in the Prometheus text format, served at ``/metrics`` on the API port.

A few counters and summaries are all the appservice needs; this avoids a dependency.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable


class Counter:
    def __init__(self, name: str, help_text: str, label: str | None = None) -> None:
        self.name, self.help, self.label = name, help_text, label
        self.values: dict[str, float] = defaultdict(float)

    def inc(self, label_value: str = "", amount: float = 1.0) -> None:
        self.values[label_value] += amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for value, count in sorted(self.values.items()) or [("", 0.0)]:
            labels = f'{{{self.label}="{value}"}}' if self.label and value else ""
            lines.append(f"{self.name}{labels} {count:g}")
        return lines


class Summary:
    """Count and sum of observed durations (seconds), per label value."""

    def __init__(self, name: str, help_text: str, label: str | None = None) -> None:
        self.name, self.help, self.label = name, help_text, label
        self.count: dict[str, int] = defaultdict(int)
        self.sum: dict[str, float] = defaultdict(float)

    def observe(self, seconds: float, label_value: str = "") -> None:
        self.count[label_value] += 1
        self.sum[label_value] += seconds

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} summary"]
        for value in sorted(self.count) or [""]:
            labels = f'{{{self.label}="{value}"}}' if self.label and value else ""
            lines.append(f"{self.name}_count{labels} {self.count.get(value, 0)}")
            lines.append(f"{self.name}_sum{labels} {self.sum.get(value, 0.0):.6f}")
        return lines


class Gauge:
    """A value read when rendered (``read`` is set by whoever owns it)."""

    def __init__(self, name: str, help_text: str, kind: str = "gauge") -> None:
        self.name, self.help, self.kind = name, help_text, kind
        self.read: Callable[[], float] = lambda: 0.0

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} {self.kind}",
            f"{self.name} {self.read():g}",
        ]


class LabelledGauge:
    """Values per label value, read when rendered (``read`` is set by whoever owns them)."""

    def __init__(self, name: str, help_text: str, label: str) -> None:
        self.name, self.help, self.label = name, help_text, label
        self.read: Callable[[], dict[str, float]] = dict

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        for value, amount in sorted(self.read().items()):
            lines.append(f'{self.name}{{{self.label}="{value}"}} {amount:g}')
        return lines


TRANSACTIONS = Counter(
    "agent_chat_transactions_total", "Homeserver transactions by outcome", "outcome"
)
TRANSACTION_APPLY = Summary(
    "agent_chat_transaction_apply_seconds", "Time to apply one homeserver transaction"
)
LEDGER_UPDATES = Counter("agent_chat_ledger_messages_total", "Messages counted into the ledger")
MALFORMED = Counter("agent_chat_malformed_events_total", "Events skipped as malformed")
REGISTRATIONS = Counter("agent_chat_registrations_total", "Identities registered", "kind")
RETIREMENTS = Counter("agent_chat_retirements_total", "Identities retired", "kind")
SEARCHES = Counter("agent_chat_searches_total", "Searches through the homeserver")
API_LATENCY = Summary("agent_chat_api_request_seconds", "REST API handling time", "route")
API_ERRORS = Counter("agent_chat_api_errors_total", "REST API error answers", "status")
NOTIFY_WAITERS = Gauge("agent_chat_notify_waiters", "Long-poll /notify requests waiting now")
NOTIFY_WOKEN = Gauge(
    "agent_chat_notify_woken_total",
    "Long-poll /notify waiters woken by a change of counts",
    "counter",
)
LINES_SHOWN = Counter("agent_chat_lines_shown_total", "Chat lines shown to agent sessions")
CHARS_INJECTED = Counter(
    "agent_chat_chars_injected_total", "Characters of chat lines put into agents' context"
)
WAKES = Counter("agent_chat_wakes_total", "Agent sessions woken by chat")
SESSIONS = LabelledGauge(
    "agent_chat_agent_sessions", "Agent sessions heard from in the last day, by state", "state"
)
NOTIFY_EVICTED = Gauge(
    "agent_chat_notify_evicted_total",
    "Long-poll /notify waiters answered early: their identity opened more than its cap",
    "counter",
)
CONNECTIONS = Gauge("agent_chat_connections", "Open connections to the HTTP server")
CONNECTIONS_REFUSED = Gauge(
    "agent_chat_connections_refused_total",
    "Connections refused (503) beyond the connection cap",
    "counter",
)
HEADER_TIMEOUTS = Gauge(
    "agent_chat_header_timeouts_total",
    "Connections closed for not sending a request's headers in time",
    "counter",
)
PRUNED = Counter(
    "agent_chat_pruned_rows_total", "Rows pruned after their retention window", "table"
)

ALL = (
    TRANSACTIONS,
    TRANSACTION_APPLY,
    LEDGER_UPDATES,
    MALFORMED,
    REGISTRATIONS,
    RETIREMENTS,
    SEARCHES,
    API_LATENCY,
    API_ERRORS,
    NOTIFY_WAITERS,
    NOTIFY_WOKEN,
    LINES_SHOWN,
    CHARS_INJECTED,
    WAKES,
    NOTIFY_EVICTED,
    CONNECTIONS,
    CONNECTIONS_REFUSED,
    HEADER_TIMEOUTS,
    PRUNED,
    SESSIONS,
)


def render() -> str:
    return "\n".join(line for metric in ALL for line in metric.render()) + "\n"
