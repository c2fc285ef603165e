"""Errors and exit codes of ``agent-chat-server``."""

from __future__ import annotations

#: Everything went well (for ``status``: both services are healthy).
EXIT_OK = 0
#: Bad input or a failed operation (unwritable data dir, port in use, corrupt config...).
EXIT_ERROR = 1
#: Command-line usage error (argparse's own code).
EXIT_USAGE = 2
#: Synapse died (``run``), or is down (``status``; in worker mode any Synapse process).
EXIT_SYNAPSE = 3
#: The appservice died (``run``), or is down or not answering Synapse's ping (``status``; in
#: worker mode any appservice process).
EXIT_APPSERVICE = 4

EXIT_CODES_HELP = f"""exit codes:
  {EXIT_OK}  ok (status: Synapse and the appservice are healthy)
  {EXIT_ERROR}  error: bad input, port in use, corrupt config, start timed out, ...
  {EXIT_USAGE}  usage error
  {EXIT_SYNAPSE}  Synapse died in a crash loop or at start-up (run), or is down (status;
     worker mode: any Synapse process)
  {EXIT_APPSERVICE}  the appservice died in a crash loop or at start-up (run), or is down or
     fails Synapse's ping (status; worker mode: any appservice process)"""

#: Each subcommand's help points to the one table instead of repeating it.
SUBCOMMAND_EXIT_CODES = "exit codes: 0 ok, 1 error, 2 usage; all of them: agent-chat-server --help"


class ServerError(Exception):
    """A failure to report as one line on stderr, with an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code
