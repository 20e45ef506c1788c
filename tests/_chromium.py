"""Drive headless Chromium through the DevTools protocol over a pipe (no extra packages).

`--dump-dom` with a virtual-time budget proved flaky: Netron lays the graph out in a Web
Worker, which virtual time does not wait for, so the DOM was sometimes dumped mid-load.
Here we poll the live page until Netron shows a graph (or time runs out) instead.
With --remote-debugging-pipe Chromium reads NUL-terminated JSON commands on fd 3 and
writes replies on fd 4.

`LoggingProxy` is the witness for "nothing leaves the machine": the tab under test sends every
request through it (loopback ones too, with the bypass list `<-loopback>`); it records each
request's host and forwards only those for the one server under test. It is the proxy of the
tab's own browser context, not of the whole browser: Debian's Chromium 156 still asks
update.googleapis.com (an on-demand component), clients2.google.com and accounts.google.com
for itself at start-up, whatever FLAGS say, and that is the browser's traffic, not the page's.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# As much of Chromium's own traffic off as flags allow (updates, metrics, safe browsing,
# field trials, ...); the rest never reaches the tab's proxy (see above).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--disable-extensions", "--disable-breakpad",
         "--disable-domain-reliability", "--disable-client-side-phishing-detection",
         "--metrics-recording-only", "--no-pings", "--no-default-browser-check",
         "--disable-field-trial-config",
         "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication"]

# Recorded in the page before its own scripts run: every Content-Security-Policy refusal.
_CSP_WATCH = ("window.__cspViolations = []; document.addEventListener("
              "'securitypolicyviolation', e => window.__cspViolations.push("
              "e.effectiveDirective + ' ' + e.blockedURI));")


@dataclass
class Page:
    body_class: str = ""
    html: str = ""
    csp_violations: list = field(default_factory=list)


class LoggingProxy:
    """An HTTP proxy on 127.0.0.1 that records the host of every request it is asked for
    (CONNECT included) and forwards only plain-HTTP requests for `allowed` ("host:port");
    everything else gets 403 and never leaves this process."""

    def __init__(self, allowed: str):
        self.allowed = allowed
        self.hosts: list[str] = []
        self.requests: list[str] = []  # "METHOD target", for messages
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_CONNECT(self):
                proxy.hosts.append(self.path)  # "host:443": a TLS tunnel we never open
                proxy.requests.append(f"CONNECT {self.path}")
                self._refuse()

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                where = url.netloc or self.headers.get("Host", "")
                proxy.hosts.append(where)
                proxy.requests.append(f"{self.command} {self.path}")
                if where != proxy.allowed:
                    return self._refuse()
                conn = http.client.HTTPConnection(where, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("proxy-connection", "connection")}
                conn.request("GET", url.path + (f"?{url.query}" if url.query else ""),
                             headers=headers)
                reply = conn.getresponse()
                body = reply.read()
                self.send_response(reply.status)
                for key, value in reply.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "server",
                                           "date"):
                        self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)
                conn.close()

            do_HEAD = do_POST = do_PUT = do_GET

            def _refuse(self):
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def context_options(self) -> dict:
        """Target.createBrowserContext parameters that send the context's requests here.
        <-loopback> removes Chromium's implicit bypass for localhost, so the proxy sees the
        page's own requests too: proof that it is in the path at all."""
        return {"proxyServer": self.url, "proxyBypassList": "<-loopback>"}


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


def render(url: str, profile_dir, ready_class: str = "default", timeout: float = 90.0,
           proxy: LoggingProxy | None = None) -> Page:
    """Open `url` in a fresh tab; return the page once the body has `ready_class` (or on
    timeout), with the Content-Security-Policy refusals it met. With `proxy`, every request
    of the tab (its page and workers, loopback included) goes through that proxy."""
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
    page = Page()
    try:
        # Open a blank tab, arm the watcher, then navigate: the watcher must be in place
        # before the page's first script.
        context = {}
        if proxy is not None:
            context = {"browserContextId": pipe.call("Target.createBrowserContext",
                                                     proxy.context_options())["browserContextId"]}
        target = pipe.call("Target.createTarget", {"url": "about:blank", **context})["targetId"]
        session = pipe.call("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        pipe.call("Page.enable", {}, session)
        pipe.call("Page.addScriptToEvaluateOnNewDocument", {"source": _CSP_WATCH}, session)
        pipe.call("Page.navigate", {"url": url}, session)
        expr = ("JSON.stringify(document.body ? [document.body.className, "
                "document.documentElement.outerHTML, window.__cspViolations || []] : [])")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = pipe.call("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                               session)
            value = json.loads(result["result"].get("value") or "[]")
            if value:
                page = Page(*value)
                if ready_class in page.body_class.split():
                    break
            time.sleep(0.25)
        return page
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
