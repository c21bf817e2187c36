"""flows.quick_exit: a finished command's process ends after its exit handlers, without the teardown."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

# A module-level object whose finalizer only the interpreter's teardown calls.
SCRIPT = """
import atexit, os, sys
from flows import quick_exit

class TornDown:
    def __del__(self):
        os.write(2, b"torn down\\n")

witness = TornDown()
{body}
"""


def run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "command.py"
    script.write_text(SCRIPT.format(body=textwrap.dedent(body)))
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )


def test_plain_sys_exit_tears_the_interpreter_down(tmp_path):
    """The control: without exit_with, the teardown runs the witness's finalizer."""
    done = run_script(tmp_path, "sys.exit(0)")
    assert (done.returncode, done.stderr) == (0, "torn down\n")


@pytest.mark.parametrize(("code", "expected"), [(0, 0), (3, 3), (None, 0), (130, 130)])
def test_exit_with_keeps_the_code_and_skips_the_teardown(tmp_path, code, expected):
    done = run_script(tmp_path, f"quick_exit.exit_with({code})")
    assert (done.returncode, done.stderr) == (expected, "")


def test_exit_handlers_registered_by_the_command_run_first_and_buffered_output_arrives(tmp_path):
    marker = tmp_path / "flushed"
    done = run_script(
        tmp_path,
        f"""
        import logging, threading, time
        logging.basicConfig(filename={str(tmp_path / "run.log")!r}, level=logging.INFO)
        atexit.register(lambda: open({str(marker)!r}, "w").write("handler ran"))
        # A non-daemon thread still working when the command returns: Python waits for it.
        # It starts its work once the command has printed (however slow the machine).
        printed = threading.Event()
        threading.Thread(target=lambda: (printed.wait(), time.sleep(0.3), print("thread done"))).start()
        for i in range(100_000):
            print(f"line {{i}}")  # block-buffered into the pipe, never flushed by the command
        printed.set()
        print("to stderr", file=sys.stderr)
        logging.getLogger("command").info("the last log line")
        quick_exit.exit_with(0)
        """,
    )
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[:100_000] == [f"line {i}" for i in range(100_000)]
    assert lines[100_000:] == ["thread done"]
    assert done.stderr == "to stderr\n"  # and not "torn down"
    assert marker.read_text() == "handler ran"
    assert (tmp_path / "run.log").read_text() == "INFO:command:the last log line\n"


def test_an_exception_or_a_message_ends_python_as_usual(tmp_path):
    raised = run_script(tmp_path, "raise RuntimeError('boom')")
    assert raised.returncode == 1
    assert raised.stderr.splitlines()[-2:] == ["RuntimeError: boom", "torn down"]

    message = run_script(tmp_path, "quick_exit.exit_with('stopped: no lake')")
    assert (message.returncode, message.stderr) == (1, "stopped: no lake\ntorn down\n")


def test_the_lakehouse_command_ends_through_it_with_its_one_line_error(tmp_path):
    done = subprocess.run(
        [str(BIN / "lakehouse"), "query", "select 1", "--lake-dir", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert (
        done.stderr
        == f"error: no published marts in {tmp_path / 'nowhere' / 'marts'}; run `lakehouse run` first\n"
    )
    script = (BIN / "lakehouse").read_text()
    assert "from flows.cli import entry" in script
