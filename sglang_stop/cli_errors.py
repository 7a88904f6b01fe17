"""The one error policy of every command line (`sglang-stop`, `stop-advise`, `python -m ...`).

- A user error (bad flag, file, field; click's usage errors too) prints ONE line, ``error: ...``,
  and exits 2.
- A signal ends the command with one line saying how far it got: 130 (SIGINT) or 143 (SIGTERM).
- Anything else is a bug: its traceback is printed and the exit is 1.
Whatever happened, the process then exits at once, even if a worker thread is still unwinding
(finished results are already on disk: records are appended and fsynced as they finish).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from types import FrameType

import click

from sglang_stop.errors import RunInterrupted, UserError
from sglang_stop.signals import EXIT_CODES, STOPPING


class _Terminated(Exception):
    """SIGTERM outside a run (while loading): unwinds like Ctrl-C does."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    if not STOPPING.is_set():  # a run is already stopping on an earlier signal: let it report
        raise _Terminated()


def _on_sigint(_signum: int, _frame: FrameType | None) -> None:
    if not STOPPING.is_set():
        raise KeyboardInterrupt


def _exit(code: int, hard: bool) -> None:
    """Exit now. ``hard`` (a real command line): without the interpreter's slow teardown (torch,
    thread joins: seconds on a busy machine) and without waiting on a worker thread still unwinding;
    safe, since every record was fsynced when appended and every other file written atomically.
    Called from Python with an explicit argv (tests): a plain SystemExit the caller can catch."""
    sys.stdout.flush()
    sys.stderr.flush()
    if hard:
        os._exit(code)
    sys.exit(code)


# commands that append records as they go: an interrupted one resumes by being rerun
_RESUME_HINT = {name: " (records appended so far are kept: rerun the same command to resume)"
                for name in ("calibrate", "label")}


def _command(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return next((a for a in args if not a.startswith("-")), "")


def run_cli_group(group: click.Command, argv: list[str] | None = None) -> None:
    """Run a click group under the policy above (standalone_mode off, so every error reaches us)."""
    main = threading.current_thread() is threading.main_thread()
    if main:
        STOPPING.clear()
        old = {s: signal.signal(s, h) for s, h in ((signal.SIGTERM, _on_sigterm), (signal.SIGINT, _on_sigint))}
    code = 0
    try:
        group.main(args=argv, standalone_mode=False)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        code = 2
    except click.UsageError as e:
        click.echo(f"error: {e.format_message()}" + (f" (see '{e.ctx.command_path} --help')" if e.ctx else ""),
                   err=True)
        code = 2
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        code = e.exit_code
    except RunInterrupted as e:
        click.echo(str(e), err=True)
        code = EXIT_CODES.get(e.signal_name, 130)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("interrupted by SIGINT" + _RESUME_HINT.get(_command(argv), ""), err=True)
        code = 130
    except _Terminated:
        click.echo("interrupted by SIGTERM" + _RESUME_HINT.get(_command(argv), ""), err=True)
        code = 143
    except BrokenPipeError:
        code = 1
    except Exception:  # noqa: BLE001 - a bug: keep its traceback, still exit promptly
        traceback.print_exc()
        code = 1
    if main and argv is not None:  # called from Python: give the caller its handlers back
        for sig, handler in old.items():
            signal.signal(sig, handler)
    _exit(code, hard=argv is None)
