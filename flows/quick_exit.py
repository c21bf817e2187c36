"""Ending a finished command's process without Python's interpreter teardown.

Once a command has returned, CPython still frees every module and object one by one before the
process ends: about 0.8 s after a pipeline run, which has loaded pandas, pyarrow, DuckDB,
Prefect, GE and the dbt worker's client side. The operating system frees that memory anyway.

`exit_with(code)` ends the process the normal way (`sys.exit`) up to the last exit handler:
non-daemon threads are joined and every `atexit` handler runs (Prefect's log and event workers
send what they hold, temporary directories and servers are removed, logging is flushed). The
handler registered here runs last, because this module registers it when it is imported, before
the command imports anything that registers one (handlers run last-registered first). It
flushes the standard streams and ends the process with the command's code, skipping only the
teardown. Files the pipeline writes are closed (and renamed into place) by the code that wrote
them, never left to the teardown.

When the command did not end through `exit_with` (an exception escaped, as with `--debug`, or
the module was only imported, as in the tests), the handler does nothing and Python ends as
usual.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import NoReturn

_exit_code: int | None = None


def _end_process() -> None:
    if _exit_code is None:
        return
    logging.shutdown()  # also an exit handler, but one registered before this one would run after it
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # closed, or a reader that went away: nothing left to save
            pass
    os._exit(_exit_code)


atexit.register(_end_process)


def exit_with(code: int | str | None) -> NoReturn:
    """sys.exit(code) for a command that has finished, without the interpreter's teardown."""
    global _exit_code
    if code is None or isinstance(code, int):  # sys.exit("message") keeps Python's own ending
        _exit_code = code or 0
    sys.exit(code)
