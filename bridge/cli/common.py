"""What every ``telecare-bridge`` command shares: the configuration, the store, failing, stopping.

Exit status, one convention for every command:

- ``0`` done;
- ``1`` (:data:`EXIT_FAILED`) the command ran and did not succeed: something it needs cannot be reached,
  a record it names is not there, the registry refuses the change in its present state (a conflict), a
  file's content is wrong, no ack came;
- ``2`` (:data:`EXIT_USAGE`) the command as given cannot run: the configuration is wrong, an argument
  breaks a rule of form (an id, a phone number, a time, a choice), a required input is missing;
- ``3`` (:data:`EXIT_REJECTED`) the bridge answered and rejected what was sent (``simulate unit``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from bridge.config import Config, ConfigError, load_config
from bridge.redaction import install_log_redaction, redact

if TYPE_CHECKING:
    from alarm_centre.privacy.reads import Viewer
    from alarm_centre.store.base import AlertStore

log = logging.getLogger("telecare")

DEFAULT_CONFIG = "config.yaml"

#: The command ran and did not succeed (unreachable, not found, conflict, bad file content, no ack).
EXIT_FAILED = 1
#: The command as given cannot run (configuration, an argument or value, a missing input).
EXIT_USAGE = 2
#: The bridge rejected what the command sent.
EXIT_REJECTED = 3


def fail(message: str, code: int) -> NoReturn:
    """Say ``telecare-bridge: message`` on stderr and exit with ``code`` (one of the ``EXIT_*`` above)."""
    print(f"telecare-bridge: {message}", file=sys.stderr)
    raise SystemExit(code)


def cli_viewer() -> Viewer:
    """Whoever runs a CLI command, as the audit of reads records them: ``{user}@cli`` on this machine.
    The CLI runs as the service's user with the store itself, so it sees what an admin sees."""
    import getpass
    import socket

    from alarm_centre.alerts.model import Role
    from alarm_centre.privacy.reads import Viewer

    return Viewer(f"{getpass.getuser()}@cli", Role.ADMIN, "cli", socket.gethostname())


def config_path(arg: str | None) -> str | None:
    """The configuration file: ``--config``, else ``$TELECARE_CONFIG``, else ``./config.yaml`` if present."""
    if arg:
        return arg
    env = os.environ.get("TELECARE_CONFIG")
    if env:
        return env
    return DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None


def load(args: argparse.Namespace) -> Config:
    """The configuration for this command, and logging set up from it; a wrong one exits with status 2."""
    path = config_path(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"telecare-bridge: configuration error in {path or 'defaults/environment'}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    logging.basicConfig(
        level=config.log.level,
        format=f"%(asctime)s %(levelname)-7s [{config.node_name}] %(name)s: %(message)s",
    )
    install_log_redaction()  # no phone number reaches the log, whoever logs it (bridge/redaction.py)
    return config


def describe_store(url: str) -> str:
    """The store as people should see it: ``SQLite /abs/file.db`` or ``PostgreSQL <url without password>``."""
    from alarm_centre.store import sqlite_path

    path = sqlite_path(url)
    if path is None:
        return f"PostgreSQL {redact(url)}"
    return f"SQLite {Path(path).absolute()}"


@contextlib.asynccontextmanager
async def open_cli_store(config: Config, config_file: str | None) -> AsyncIterator[AlertStore]:
    """The configured store for a CLI command, named on stderr (stdout stays the command's own output).

    A SQLite file that does not exist yet is created, and that is said plainly: a command started in
    the wrong directory without ``--config`` would otherwise work on a new, empty store in silence.
    """
    from alarm_centre.store import open_store

    _name_store(config, config_file)
    async with open_store(config.store.url) as store:
        yield store


def _name_store(config: Config, config_file: str | None) -> None:
    from alarm_centre.store import sqlite_path

    path = sqlite_path(config.store.url)
    if path is not None and not Path(path).exists():
        hint = "" if config_file else "; no config file was found here: give --config FILE"
        print(
            f"telecare-bridge: store {describe_store(config.store.url)} did not exist: "
            f"creating a new, empty one{hint}",
            file=sys.stderr,
        )
    else:
        print(f"telecare-bridge: store {describe_store(config.store.url)}", file=sys.stderr)


_ASYNCIO_DIR = Path(asyncio.__file__).parent
#: Seconds after a stop signal before a shutdown still under way names what it waits for.
STOP_REPORT_S = 10.0


def run_until_signal(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` and cancel it cleanly on SIGINT or SIGTERM.

    A shutdown still under way :data:`STOP_REPORT_S` after the signal logs the tasks it waits for
    (name, and where each waits), so the engineer on call sees what is stuck; another signal cancels
    again.
    """

    async def runner() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        signalled: list[str] = []
        report: list[asyncio.TimerHandle] = []

        def stop(sig: signal.Signals) -> None:
            signalled.append(sig.name)
            task.cancel()
            if not report:
                report.append(loop.call_later(STOP_REPORT_S, _report_stopping, sig.name))

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop, sig)
        try:
            await main()
        except asyncio.CancelledError:
            if not signalled:
                raise
            log.info("stopped by %s", signalled[0])  # a command that simply finished says nothing
        finally:
            for timer in report:
                timer.cancel()

    asyncio.run(runner())


def _report_stopping(signal_name: str) -> None:
    """Log what a shutdown that takes long still waits for."""
    waiting = sorted(_where(task) for task in asyncio.all_tasks() if not task.done())
    log.warning(
        "still stopping %.0f s after %s; waiting for %d task%s: %s (send the signal again to cancel "
        "them again)",
        STOP_REPORT_S,
        signal_name,
        len(waiting),
        "" if len(waiting) == 1 else "s",
        "; ".join(waiting),
    )


def _where(task: asyncio.Task[Any]) -> str:
    """A task's name and the line it waits on: the innermost coroutine of the chain it awaits that is
    not asyncio's own (an ``Event.wait`` says less than the line that awaits it)."""
    where = ""
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is None:
            break
        path = Path(frame.f_code.co_filename)
        if path.parent != _ASYNCIO_DIR:
            where = f" at {path.name}:{frame.f_lineno}"
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return task.get_name() + where
