"""Where everything lives inside a server data directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import os

#: Environment variable naming the default data directory.
DATA_DIR_ENV = "AGENT_CHAT_SERVER_DIR"


def default_data_dir() -> Path:
    """``$AGENT_CHAT_SERVER_DIR``, else ``~/.agent-chat-server``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path.home() / ".agent-chat-server"


@dataclass(frozen=True)
class DataDir:
    """The layout of a data directory (see README, "Data directory")."""

    root: Path

    @classmethod
    def at(cls, path: str | os.PathLike[str] | None) -> DataDir:
        """An absolute, user-expanded data dir; ``None`` means the default."""
        p = Path(path).expanduser() if path is not None else default_data_dir().expanduser()
        return cls(Path(os.path.abspath(p)))

    # Synapse
    @property
    def homeserver_yaml(self) -> Path:
        return self.root / "homeserver.yaml"

    @property
    def log_config(self) -> Path:
        return self.root / "homeserver.log.config"

    @property
    def signing_key(self) -> Path:
        return self.root / "homeserver.signing.key"

    @property
    def synapse_db(self) -> Path:
        return self.root / "homeserver.db"

    @property
    def media_store(self) -> Path:
        return self.root / "media_store"

    # Appservice
    @property
    def registration_yaml(self) -> Path:
        return self.root / "registration.yaml"

    @property
    def appservice_yaml(self) -> Path:
        return self.root / "appservice.yaml"

    @property
    def appservice_db(self) -> Path:
        return self.root / "appservice.db"

    # Synapse workers (init --workers N)
    @property
    def workers_dir(self) -> Path:
        return self.root / "workers"

    def worker_yaml(self, name: str) -> Path:
        return self.workers_dir / f"{name}.yaml"

    def worker_log_config(self, name: str) -> Path:
        return self.workers_dir / f"{name}.log.config"

    @property
    def topology_yaml(self) -> Path:
        """The processes the supervisor runs in worker mode (absent: one Synapse process)."""
        return self.workers_dir / "topology.yaml"

    @property
    def router_config(self) -> Path:
        """The Caddy config routing clients to main and the workers."""
        return self.root / "Caddyfile.workers"

    def worker_log(self, name: str) -> Path:
        """A Synapse worker's own log (its log config)."""
        return self.logs / f"{name}.log"

    def console_log(self, name: str) -> Path:
        """A process's stdout/stderr in the background (workers, appservice replicas)."""
        return self.logs / f"{name}.console.log"

    # Runtime
    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def synapse_log(self) -> Path:
        """Synapse's own log (written through its log config)."""
        return self.logs / "homeserver.log"

    @property
    def synapse_console_log(self) -> Path:
        """Synapse's stdout/stderr when started in the background."""
        return self.logs / "synapse.console.log"

    @property
    def appservice_log(self) -> Path:
        return self.logs / "appservice.log"

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "supervisor.log"

    @property
    def lock_file(self) -> Path:
        """Held (flock) by the running supervisor for its whole life."""
        return self.run / "supervisor.lock"

    @property
    def last_exit_file(self) -> Path:
        """One line: when and why the last supervisor ended."""
        return self.run / "last-exit"

    @property
    def services_file(self) -> Path:
        """JSON: each supervised process's state and restarts (written by the supervisor)."""
        return self.run / "services.json"

    def pid_file(self, name: str) -> Path:
        """``run/<name>.pid`` for ``supervisor``, ``synapse``, ``appservice`` or a worker."""
        return self.run / f"{name}.pid"

    def hold_file(self, name: str) -> Path:
        """Present while the supervisor must keep service ``name`` stopped."""
        return self.run / f"hold-{name}"

    def config_files(self) -> list[Path]:
        """Files ``init`` writes."""
        return [
            self.homeserver_yaml,
            self.log_config,
            self.signing_key,
            self.registration_yaml,
            self.appservice_yaml,
        ]

    def is_initialised(self) -> bool:
        """True when every config file exists."""
        return all(p.exists() for p in self.config_files())
