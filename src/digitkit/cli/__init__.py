"""The `digitkit` program: `main`, what the console script and `python -m digitkit` run.

The commands are the click group of `digitkit.cli.group` (`digitkit.cli.cli`), each in its own
module under `digitkit.cli`, imported only when it runs.

Ctrl-C from the first instant. `main` installs its SIGINT and SIGTERM handler before it
imports anything (click, the group, a command's modules): nothing here imports more than the
interpreter has already loaded. So a Ctrl-C at any moment is one line and exit 130, never a
traceback of whatever was importing:
- before a command runs (start-up, parsing the options) and after it (exiting): the process
  ends at once with "digitkit: error: interrupted", exit 130 (nothing is being written then);
- while a command runs (`interrupts_raised`): KeyboardInterrupt, as Python raises it, so the
  command stops cleanly (the rows so far whole, the workers stopped), and the group maps it
  to that line and 130 (and `_forget_interrupt` keeps `python -m` from turning that 130
  into death by SIGINT).
Only the interpreter's own start-up, before any line of digitkit runs, is outside this: a
Ctrl-C in its first milliseconds meets the system's default action, which a shell also shows
as 130.
"""

import os
import signal
import sys

#: Exit code of an interrupted command (128 + SIGINT, as a shell reports one).
EXIT_INTERRUPTED = 130
_LINE = b"digitkit: error: interrupted\n"
#: Set by `main`: the handlers are ours to switch (not under a test's CliRunner or a caller's
#: own handler). `said`: the line is out already.
_state = {"owned": False, "said": False, "term": signal.SIG_DFL, "hook": None}


def _interrupted(signum, frame) -> None:
    if not _state["said"]:
        os.write(2, _LINE)
    os._exit(EXIT_INTERRUPTED)


def said_interrupted() -> None:
    """The group has printed the line: a second Ctrl-C while exiting does not repeat it."""
    _state["said"] = True


def _redeliver(unraisable) -> None:
    """sys.unraisablehook while a command runs. A KeyboardInterrupt raised while a finalizer
    runs (a `__del__`, such as a multiprocessing connection's as the garbage collector frees
    it) cannot leave it: Python would print it as "Exception ignored in ..." with a traceback
    and drop the Ctrl-C. It is sent again instead, from another thread a moment later: sent
    from here, it would be raised in here (and printed the same way). Should that land in a
    finalizer too, it comes back here and goes round again. Anything else goes to the hook
    there was."""
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        import _thread  # `threading`'s start waits for the thread: the interrupt would land there

        _thread.start_new_thread(_resend_interrupt, ())
        return
    (_state["hook"] or sys.__unraisablehook__)(unraisable)


def _resend_interrupt() -> None:
    import time

    time.sleep(0.01)  # the finalizer's thread runs on meanwhile (it holds the GIL now)
    os.kill(os.getpid(), signal.SIGINT)


class interrupts_raised:
    """While a command runs: Ctrl-C raises KeyboardInterrupt (re-sent when it lands in a
    finalizer: `_redeliver`) and SIGTERM has the action it had (a command that stops on it,
    like `infer`, installs its own); around it, `main`'s quiet exit. Does nothing unless
    `main` installed that exit. (A class: contextlib is one import more before the handler.)"""

    def __enter__(self):
        if _state["owned"]:
            _state["hook"] = sys.unraisablehook
            sys.unraisablehook = _redeliver
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, _state["term"])
        return self

    def __exit__(self, *exc):
        if _state["owned"]:
            signal.signal(signal.SIGINT, _interrupted)
            signal.signal(signal.SIGTERM, _interrupted)
            sys.unraisablehook = _state["hook"] or sys.__unraisablehook__


def main(argv=None) -> None:
    """Run the `digitkit` program with `argv` (default: sys.argv[1:]); exits the process.
    It owns SIGINT and SIGTERM from its first line to the process's end (see above); a
    SIGINT the caller ignores (a background job) stays ignored."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        _state["term"] = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGINT, _interrupted)
        signal.signal(signal.SIGTERM, _interrupted)
        _state["owned"] = True
    try:
        from digitkit.cli.group import cli

        cli.main(args=argv, prog_name="digitkit")
    finally:
        _forget_interrupt()


def _forget_interrupt() -> None:
    """CPython (3.8 on) marks a KeyboardInterrupt that ends code run from a string (`exec`:
    the dataclasses and named tuples a module makes as it imports, where a Ctrl-C often
    lands) as unhandled, even when it is caught later, and `python -m digitkit` then ends
    itself by SIGINT on its way out (-2 to its caller, not 130, after the line). Every string
    eval clears that mark as it starts: an empty one, once the interrupt is handled."""
    exec("")


def __getattr__(name):
    if name == "cli":  # the click group, for CliRunner and other in-process callers
        from digitkit.cli.group import cli

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
