"""Drive headless Chromium through the DevTools protocol over a pipe (no extra packages).

`--dump-dom` with a virtual-time budget proved flaky: Netron lays the graph out in a Web
Worker, which virtual time does not wait for, so the DOM was sometimes dumped mid-load.
Here we poll the live page until Netron shows a graph (or time runs out) instead.
With --remote-debugging-pipe Chromium reads NUL-terminated JSON commands on fd 3 and
writes replies on fd 4.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


class _Pipe:
    def __init__(self, write_fd: int, read_fd: int):
        self._w = os.fdopen(write_fd, "wb", buffering=0)
        self._r = os.fdopen(read_fd, "rb", buffering=0)
        self._buf = b""
        self._id = 0

    def call(self, method: str, params: dict | None = None, session: str | None = None):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._w.write(json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = self._r.read(1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:  # events and other replies are skipped
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def close(self):
        self._w.close()
        self._r.close()


def render(url: str, profile_dir, ready_class: str = "default",
           timeout: float = 90.0) -> tuple[str, str]:
    """Open `url`; return (body class, page HTML) once the body has `ready_class` or on timeout."""
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    # bash moves our pipe ends to fds 3 and 4, where Chromium expects them (dash's
    # redirections only take single-digit descriptors, so not plain sh).
    script = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}'
    proc = subprocess.Popen(
        ["bash", "-c", script, CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}",
         "--remote-debugging-pipe", "about:blank"],
        pass_fds=(to_chrome_r, from_chrome_w),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    pipe = _Pipe(to_chrome_w, from_chrome_r)
    body_class, html = "", ""
    try:
        target = pipe.call("Target.createTarget", {"url": url})["targetId"]
        session = pipe.call("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        expr = ("document.body ? document.body.className + '\\n' + "
                "document.documentElement.outerHTML : ''")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = pipe.call("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                               session)
            body_class, _, html = result["result"].get("value", "").partition("\n")
            if ready_class in body_class.split():
                break
            time.sleep(0.25)
        return body_class, html
    finally:
        try:
            pipe.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        pipe.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
