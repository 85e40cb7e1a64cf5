"""Output to a pipe its reader closes early (`gatewayd export | head`): the command ends
quietly, as command-line tools do, instead of with a BrokenPipeError traceback (Python's
"Note on SIGPIPE" in the signal module's documentation)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EXIT_PIPE_CLOSED = 128 + 13  # what a shell reports for a tool ended by SIGPIPE


def quiet_on_closed_pipe(command: Callable[[], int]) -> int:
    """Run `command`; if its reader closes standard output, stop writing and exit 141."""
    try:
        status = command()
        sys.stdout.flush()  # what is still buffered meets the closed pipe here, not at exit
        return status
    except BrokenPipeError:
        # Python flushes stdout again at exit: pointed at /dev/null, that flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_PIPE_CLOSED
