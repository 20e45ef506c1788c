"""Show a model's graph in Netron, served from this machine.

Netron is a static web app; `digitkit.view.server` serves it with the model's files, and
decides what is served, to whom and with which headers. The default address is 127.0.0.1: a
model is someone's work and the server has no authentication, so exposing it to the network
must be a choice.
"""

from __future__ import annotations

import os
import sys
import time
import webbrowser
from pathlib import Path

from digitkit.errors import DependencyError, DigitkitError
from digitkit.model.files import KERAS_H5, KERAS_V3, ONNX, identify
from digitkit.view.server import resolve_viewable  # noqa: F401 - part of this module's API

DEFAULT_HOST = "127.0.0.1"


def convention_note(path: str | os.PathLike, flags=None) -> str | None:
    """What `view` says about a model made elsewhere, cheaply (no runtime, no data): the input
    convention the flags declare (digitkit.model.conventions.ConventionFlags), or the one an
    adapted ONNX records in its metadata, or that it is not digitkit's contract; for a
    general image classifier carrying its contract: its classes, input size and pixel policy
    (`contract_note`). None for digitkit's own digit models (nothing to say)."""
    from digitkit.model.conventions import DECLARE_HINT, declared_convention
    from digitkit.predictors.adapted import FOREIGN, contract_status, stated_input_shape
    from digitkit.predictors.runnable import describe_flags

    model = identify(path)
    name = model.path.name
    if flags is not None and flags.given:
        shape = stated_input_shape(model.path) if flags.declared else None
        if shape is not None:
            declared = declared_convention(flags, shape)
            return f"{name}: declared input convention {declared.describe(full=True)}"
        return f"{name}: declared input convention: {describe_flags(flags)}"
    general = contract_note(model.path)
    if general is not None:
        return general
    if model.kind not in (ONNX, KERAS_H5, KERAS_V3):
        return None  # a SavedModel's signature needs TensorFlow to read: not worth it here
    try:
        status, recorded = contract_status(model.path)
    except DependencyError:  # a Keras file without the tensorflow extra (h5py): say nothing
        return None
    if recorded is not None:
        return (f"{name}: digitkit's adapter around a model made elsewhere; the source's input "
                f"convention: {recorded.describe(full=True)}")
    if status == FOREIGN:
        return (f"{name}: made elsewhere (not digitkit's contract, 'pixels' (N,28,28) 0..255 -> "
                "'probabilities'); `digitkit infer`, `bench` and `export` detect its input "
                f"convention on MNIST test images, or {DECLARE_HINT}")
    return None


#: Class names a note shows before "...".
_NAMES_SHOWN = 5


def contract_note(path: str | os.PathLike) -> str | None:
    """What `view` says of a general image classifier that carries its contract (ONNX
    metadata, an embedded record, its export directory's export.json), read without a
    runtime: how many classes and the first names, the input size and channels, and the
    pixel policy files go through. None for digit models and models carrying none."""
    from digitkit.predictors.runnable import carried_contract

    try:
        c = carried_contract(path)
    except DigitkitError:
        return None  # a damaged record: the loaders say so when the model is run
    if c is None or c.is_digit:
        return None
    names = ", ".join(c.class_names[:_NAMES_SHOWN])
    more = ", ..." if c.num_classes > _NAMES_SHOWN else ""
    return (f"{Path(path).name}: image classifier, {c.num_classes} classes ({names}{more}); "
            f"input {c.input_text()}; files: {c.preprocessing.summary}")


class NetronViewer:
    """One Netron server for one model (digitkit.view.server decides what it serves and how).
    Cheap to construct; `start()` binds and serves.

    Usable as a context manager so tests and scripts always stop the server.
    """

    def __init__(self, path: str | os.PathLike, host: str = DEFAULT_HOST,
                 port: int | None = None):
        self.path = Path(path)
        self.host = host
        self.port = port  # None: 8080, else 8081, else any free port; 0: any free port
        self.address: tuple[str, int] | None = None
        self._server = None
        self._thread = None

    @property
    def url(self) -> str:
        if self.address is None:
            raise DigitkitError("the Netron server is not running")
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{host}:{self.address[1]}/"

    def start(self) -> str:
        from digitkit.view.server import start_server

        try:
            self._server, self._thread = start_server(self.path, self.host, self.port)
        except OSError as err:
            where = f"{self.host}:{self.port}" if self.port else self.host
            raise DigitkitError(f"{where}: cannot serve Netron ({err.strerror or err})") from err
        self.address = (self.host, self._server.server_address[1])
        return self.url

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None
            self.address = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


def open_browser(url: str) -> bool:
    """Open `url` in a graphical browser if there is a display; never a terminal browser."""
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if headless:
        return False
    try:
        return bool(webbrowser.open(url))
    except webbrowser.Error:
        return False


def view_until_interrupted(path: str | os.PathLike, port: int | None = None,
                           host: str = DEFAULT_HOST, browse: bool = True, echo=print) -> None:
    """Serve `path` in Netron, print the URL, and block until Ctrl-C; then stop cleanly."""
    viewer = NetronViewer(path, host=host, port=port)
    url = viewer.start()
    restore = _stop_on_signals()
    try:
        echo(f"Netron is serving {viewer.path} at {url}")
        if browse and not open_browser(url):
            echo("no display found: open the URL above in a browser")
        echo("press Ctrl-C to stop")
        while viewer.alive():
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a viewer is meant to end: a clean stop, exit status 0
    finally:
        viewer.stop()
        restore()
    echo("Netron stopped")


def _stop_on_signals():
    """Make SIGINT and SIGTERM end the wait, even if the shell started us with SIGINT ignored
    (as non-interactive shells do for background jobs). Returns a function restoring them."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    saved = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore():
        for sig, handler in saved.items():
            signal.signal(sig, handler)

    return restore
