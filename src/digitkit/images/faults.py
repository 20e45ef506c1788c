"""Test-only fault injection into the decoder: real crashes and hangs, never mocks.

When the environment variable DIGITKIT_TEST_DECODER_FAULTS is set (read once, when this
module is imported: the local engine's forkserver and each Ray actor import it afresh), e.g.
to "segv=*crash*,sleep=*hang*", decoding a file whose name matches a pattern (fnmatch, on the
file name) really does it in the decoding process:

- segv: SIGSEGV, as a native decoder's bad pointer would;
- abort: SIGABRT (a failed assertion in C);
- kill: SIGKILL, as the out-of-memory killer would;
- sleep: an hour, as a decoder stuck in a loop would.

The engines must then turn each into an error row for that file alone
(`digitkit.infer.pool.isolation`). Unset (always, outside the tests) it costs one test per file.

With DIGITKIT_TEST_DECODER_FAULT_LOG naming a file, each fault appends a line to it
("ACTION NAME") before it happens, so a test can count how often a file was tried.
"""

from __future__ import annotations

import os

ENV = "DIGITKIT_TEST_DECODER_FAULTS"
LOG_ENV = "DIGITKIT_TEST_DECODER_FAULT_LOG"
ACTIONS = ("segv", "abort", "kill", "sleep")


def parse(spec: str | None) -> tuple[tuple[str, str], ...]:
    """("action", "pattern") pairs of a DIGITKIT_TEST_DECODER_FAULTS value."""
    faults = []
    for item in (spec or "").split(","):
        action, sep, pattern = item.strip().partition("=")
        if sep and action in ACTIONS:
            faults.append((action, pattern))
    return tuple(faults)


FAULTS = parse(os.environ.get(ENV))


def inject_fault(path) -> None:
    """Crash or hang this process if `path`'s name matches a pattern of FAULTS."""
    import fnmatch
    import resource
    import signal
    import time

    name = os.path.basename(os.fsdecode(path))
    for action, pattern in FAULTS:
        if fnmatch.fnmatchcase(name, pattern):
            log = os.environ.get(LOG_ENV)
            if log:
                with open(log, "a") as f:
                    f.write(f"{action} {name}\n")
            if action == "sleep":
                time.sleep(3600)
                return
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # deliberate: no core file
            if action == "abort":
                os.abort()
            os.kill(os.getpid(), signal.SIGKILL if action == "kill" else signal.SIGSEGV)
