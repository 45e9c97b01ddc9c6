"""What every command line of the project shares: bad input ends in one line on stderr that
names the problem, and a non-zero exit; a traceback only when asked for, with ``--debug``
anywhere on the command line or ``CQL_COMPANION_DEBUG=1`` in the environment.

Exit codes: 0 success; 2 bad input (a value, a file, a folder: something the user can fix);
1 a failure of the run itself (a NaN in training, an unexpected error); 130 interrupted.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TextIO

from deep.checkpoint import CheckpointError

__all__ = ["DEBUG_ENV", "INPUT_ERRORS", "main_guard", "one_line"]

DEBUG_ENV = "CQL_COMPANION_DEBUG"

INPUT_ERRORS: tuple[type[BaseException], ...] = (
    CheckpointError,
    ValueError,
    KeyError,
    OSError,
    ImportError,
)
"""Errors that come from what the user gave (options, files, folders, missing extras)."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (a KeyError's repr quotes drop)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    text = " ".join(text.split())
    return text or type(error).__name__


def _sentence_warnings() -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints ``warning: <message>`` on one line (no source
    line, no file name), once per category and message."""
    seen: set[tuple[type[Warning], str]] = set()

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        key = (category, str(message))
        if key not in seen:
            seen.add(key)
            print(f"warning: {' '.join(str(message).split())}", file=file or sys.stderr)

    return show


def main_guard(
    body: Callable[[list[str]], int],
    argv: Sequence[str] | None,
    on_interrupt: Callable[[], str] | None = None,
) -> int:
    """Run ``body(args)`` (``args`` = ``argv`` or ``sys.argv[1:]`` without ``--debug``) and
    turn any error into one line on stderr and an exit code (see the module docstring).

    ``on_interrupt`` returns the line printed on Ctrl-C (default: "interrupted"). Warnings
    read as sentences: ``warning: <message>``, once per cause, without a source line.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _sentence_warnings()
            return body(args)
    except KeyboardInterrupt:
        print(on_interrupt() if on_interrupt is not None else "interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        if isinstance(e, INPUT_ERRORS):
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2
        print(
            f"error: {type(e).__name__}: {one_line(e)} (run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
