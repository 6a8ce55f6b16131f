"""Third-party chatter goes to a log file, not the terminal.

lm-eval, transformers, datasets and the child processes they start (``git describe`` outside a
checkout prints "fatal: not a git repository") write warnings, notices and progress bars to
standard error: ~200 lines per run that bury mlbench's own progress and summary. While a run
executes, ``chatter_to(log)`` sends all of it to the run's log file, at every level it can be
written: ``sys.stderr``/``sys.stdout`` (warnings, tqdm, print), logging handlers that hold the
terminal's stream, and file descriptor 2 (C code, child processes). mlbench's own output goes to the
stream it yields. ``mlbench run -v`` skips the redirection. Everything is restored on exit,
including handlers that libraries created meanwhile (they point back at the real stderr).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


def _fd(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    return [
        handler
        for logger in loggers
        for handler in logger.handlers
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
    ]


@contextlib.contextmanager
def chatter_to(log_path: Path) -> Iterator[TextIO]:
    """Redirect everything written to stderr/stdout into ``log_path`` (appended); yield the
    terminal stream for mlbench's own lines."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    terminal_err, terminal_out = sys.stderr, sys.stdout
    for stream in (terminal_err, terminal_out):
        with contextlib.suppress(Exception):
            stream.flush()
    saved_fd2 = os.dup(2)
    # Our own lines keep reaching the real terminal: a stream on a copy of fd 2 when sys.stderr
    # is fd 2 (a console), else the object itself (a test runner's buffer).
    own = os.fdopen(os.dup(saved_fd2), "w", buffering=1, encoding="utf-8", errors="replace") \
        if _fd(terminal_err) == 2 else terminal_err
    log = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    terminal_streams = {id(s) for s in (terminal_err, terminal_out, sys.__stderr__, sys.__stdout__) if s is not None}
    moved = [h for h in _stream_handlers() if id(h.stream) in terminal_streams]
    previous = {id(h): h.stream for h in moved}
    # Records of loggers without a handler of their own (lm-eval's) reach the root: one handler
    # there writes them to the log, whatever else (a test runner's capture) listens as well.
    catch_all = logging.StreamHandler(log)
    catch_all.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    try:
        os.dup2(log.fileno(), 2)
        sys.stderr, sys.stdout = log, log
        for handler in moved:
            handler.setStream(log)
        if not any(handler in moved for handler in root.handlers):
            root.addHandler(catch_all)
        yield own
    finally:
        root.removeHandler(catch_all)
        with contextlib.suppress(Exception):
            log.flush()
        sys.stderr, sys.stdout = terminal_err, terminal_out
        os.dup2(saved_fd2, 2)
        os.close(saved_fd2)
        for handler in _stream_handlers():
            if handler.stream is log:  # moved above, or created by a library while we ran
                handler.setStream(previous.get(id(handler), terminal_err))
        log.close()
        if own is not terminal_err:
            own.close()
