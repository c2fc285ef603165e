"""``python -m agent_chat_appservice -c appservice.yaml``: run the appservice in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from .config import Config, ConfigError


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agent_chat_appservice")
    parser.add_argument("-c", "--config", required=True, help="path to appservice.yaml")
    parser.add_argument(
        "--port",
        type=int,
        help="serve the REST API on this port instead of the config's (an API replica)",
    )
    args = parser.parse_args(argv)
    try:
        config = Config.load(args.config)
    except ConfigError as e:
        print(f"agent_chat_appservice: {e}", file=sys.stderr)
        return 1
    if args.port is not None:
        if not 0 < args.port < 65536 or args.port == config.transactions_port:
            print(
                f"agent_chat_appservice: --port {args.port} is not a free API port "
                "(1-65535, not transactions_port)",
                file=sys.stderr,
            )
            return 1
        config.port = args.port
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=config.log_level.upper(), handlers=[handler])
    # aiohttp's and mautrix's request logs at DEBUG would be noise at INFO.
    logging.getLogger("agent_chat.matrix").setLevel(max(logging.INFO, logging.root.level))
    run = asyncio.run
    try:
        import uvloop  # a faster event loop: every send is two HTTP hops through this process

        run = uvloop.run
    except ImportError:
        pass
    try:
        return run(_serve(config))
    except KeyboardInterrupt:
        return 0


async def _serve(config: Config) -> int:
    from .service import AgentChatService

    service = AgentChatService(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
    except OSError as e:
        logging.getLogger("agent_chat").error("cannot start: %s", e)
        await service.stop()
        return 1
    except Exception as e:
        logging.getLogger("agent_chat").exception("cannot start: %s", e)
        await service.stop()
        return 1
    stopping = asyncio.create_task(stop.wait())
    failing = asyncio.create_task(service.failed.wait())
    await asyncio.wait((stopping, failing), return_when=asyncio.FIRST_COMPLETED)
    for task in (stopping, failing):
        task.cancel()
    await service.stop()
    return 1 if service.failed.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
