"""What `digitkit view` serves, to whom, and with which headers: the one place that decides.

The pip `netron` package is a static web app plus a small server. That server hands out any
file under the model's folder, whatever the request's Host, and the page it serves asks about
cookies (after looking the visitor up on ipinfo.io) and then reports usage to Google
Analytics. We keep Netron's app, unchanged on disk, and serve it ourselves:

- What: Netron's own assets (the files at the top of the installed package, of the types in
  `ASSET_TYPES`; never its Python) and, under /data/, the model's files only (`model_files`):
  the model, the external-data files an ONNX model names, a SavedModel's variables. Every
  request is looked up by name in these two tables; anything else is 404, so there is no path
  arithmetic to get wrong (`..`, encoded or not, absolute paths, symlinks out of the folder).
- To whom: requests whose Host names this server (`HostRule`), else 403. A web page that
  rebinds its own DNS name to 127.0.0.1 still sends its own name as Host.
- Headers: a Content-Security-Policy (`CSP`) that lets the page load from and connect to this
  server only, so nothing leaves the machine even if Netron changes; plus no caching, no
  sniffing, no referrer, no framing and no cross-origin reads (`HEADERS`).
- Netron's own switches, set on its page (`netron_page`): no `version` meta (Netron then takes
  itself for a development build: no telemetry, no error reports), no `date` meta (no "please
  update" screen once the build is 180 days old), and its `consent` cookie for the session
  (no cookie screen, and no ipinfo.io lookup to decide whether to show one).
"""

from __future__ import annotations

import html
import http.server
import importlib.util
import ipaddress
import os
import re
import socket
import socketserver
import stat
import threading
import urllib.parse
from pathlib import Path, PurePosixPath

from digitkit.errors import DependencyError
from digitkit.model.files import ONNX, SAVEDMODEL, identify

#: What we serve of Netron's package folder, by suffix, and as what.
ASSET_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

#: Only this server, for everything that can fetch. Netron needs data: and blob: images (its
#: PNG export draws an SVG data: URL), inline styles (its page has them); nothing else.
CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "worker-src 'self'",
    "connect-src 'self'",
    "img-src 'self' data: blob:",
    "style-src 'self' 'unsafe-inline'",
    "font-src 'self'",
    "frame-src 'none'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'none'",
])

#: On every response, refusals included.
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}

#: Netron skips its cookie screen (and the ipinfo.io lookup behind it) when this cookie is set;
#: a session cookie, so nothing stays in the browser after it closes.
CONSENT_COOKIE = "consent=1; Path=/; SameSite=Strict"

_DROPPED_META = re.compile(r'\s*<meta name="(?:version|date)" content="[^"]*">')


def resolve_viewable(path: str | os.PathLike) -> Path:
    """The file Netron should open for `path` (a SavedModel directory means its saved_model.pb)."""
    model = identify(path)
    return model.path / "saved_model.pb" if model.kind == SAVEDMODEL else model.path


def model_files(path: str | os.PathLike) -> dict[str, Path]:
    """The model's files a viewer may request, by their name under /data/; the first is the
    one Netron opens. Files beside the model are included only when the model names them, are
    regular files, and resolve inside the model's folder (as ONNX Runtime requires)."""
    model = identify(path)
    if model.kind == SAVEDMODEL:
        pb = model.path / "saved_model.pb"
        folder = model.path
        variables = folder / "variables"
        names = sorted(f"variables/{p.name}" for p in variables.iterdir()
                       if p.name == "variables.index" or p.name.startswith("variables.data-")
                       ) if variables.is_dir() else []
        files = {"saved_model.pb": pb}
    else:
        folder = model.path.parent
        names = _external_data(model.path) if model.kind == ONNX else []
        files = {model.path.name: model.path}
    for name in names:
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or name in files:
            continue
        if _regular_inside(folder / rel, folder):
            files[rel.as_posix()] = folder / rel
    return files


def _external_data(path: Path) -> list[str]:
    """The `location` of every tensor an ONNX model keeps in another file."""
    from onnx import TensorProto

    from digitkit.predictors.adapted import _read_onnx

    def tensors(graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        for node in graph.node:
            for attr in node.attribute:
                yield from ([attr.t] if attr.HasField("t") else [])
                yield from attr.tensors
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    yield from tensors(sub)

    locations = []
    for tensor in tensors(_read_onnx(path).graph):
        if tensor.data_location == TensorProto.EXTERNAL:
            locations += [e.value for e in tensor.external_data
                          if e.key == "location" and e.value not in locations]
    return locations


def _regular_inside(path: Path, folder: Path) -> bool:
    real, root = os.path.realpath(path), os.path.realpath(folder)
    try:
        return os.path.commonpath([real, root]) == root and stat.S_ISREG(os.stat(real).st_mode)
    except (OSError, ValueError):
        return False


def netron_assets() -> dict[str, Path]:
    """Netron's web app: the files at the top of the installed `netron` package, by name."""
    spec = importlib.util.find_spec("netron")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError("netron is not installed: pip install netron")
    folder = Path(next(iter(spec.submodule_search_locations)))
    assets = {p.name: p for p in folder.iterdir()
              if p.suffix in ASSET_TYPES and p.is_file()}
    if "index.html" not in assets:
        raise DependencyError(f"{folder}: the netron package has no index.html; "
                              "pip install --force-reinstall netron")
    return assets


def netron_page(index_html: str, first: str) -> bytes:
    """Netron's index.html, told which model to open and with its switches set (module doc)."""
    name = html.escape(PurePosixPath(first).name)
    meta = ['<meta name="type" content="Python">',
            f'<meta name="file" content="/data/{html.escape(urllib.parse.quote(first))}">',
            f'<meta name="identifier" content="{name}">',
            f'<meta name="name" content="{name}">']
    page = _DROPPED_META.sub("", index_html)
    head_end = page.index("</head>")
    return (page[:head_end] + "\n".join(meta) + "\n" + page[head_end:]).encode("utf-8")


class HostRule:
    """Which Host headers name this server: its own address, or, for a loopback server, any
    loopback name (`localhost`, 127.0.0.1, [::1]); for a wildcard address, any IP literal.
    Always with the server's port. A DNS name other than localhost is never accepted."""

    def __init__(self, host: str, port: int):
        self.port = port
        self.names = {host.strip("[]").lower()}
        self.any_ip = False
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            ip = None
        if host.lower() == "localhost" or (ip is not None and ip.is_loopback):
            self.names |= {"localhost", "127.0.0.1", "::1"}
        elif ip is not None and ip.is_unspecified:
            self.any_ip = True

    def allows(self, header: str | None) -> bool:
        if not header:
            return False
        try:
            parts = urllib.parse.urlsplit("//" + header.strip())
            name, port = parts.hostname, parts.port or 80
        except ValueError:
            return False
        if name is None or port != self.port:
            return False
        if name in self.names:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return self.any_ip


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ViewServer  # HTTP/1.0: one request per connection, so a stopped server serves no more

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        site = self.server.site
        if not site.hosts.allows(self.headers.get("Host")):
            return self._send(403, b"Host not allowed\n", "text/plain; charset=utf-8")
        target = urllib.parse.unquote(self.path.split("?", 1)[0].split("#", 1)[0])
        if target in ("/", "/index.html"):
            return self._send(200, site.page, ASSET_TYPES[".html"],
                              {"Set-Cookie": CONSENT_COOKIE})
        if target.startswith("/data/"):
            path, kind = site.files.get(target[len("/data/"):]), "application/octet-stream"
        else:
            path = site.assets.get(target[1:])
            kind = ASSET_TYPES.get(path.suffix) if path else None
        if path is None or (target.startswith("/data/") and not site.still_inside(path)):
            return self._not_found()
        try:
            # O_NONBLOCK: a FIFO swapped in for a file must not hang the request in open().
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return self._not_found()
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return self._not_found()
            self._send(200, f, kind)

    def _not_found(self):
        self._send(404, b"Not found\n", "text/plain; charset=utf-8")

    def _send(self, code: int, body, kind: str, extra: dict | None = None):
        size = len(body) if isinstance(body, bytes) else os.fstat(body.fileno()).st_size
        self.send_response(code)
        for key, value in {**HEADERS, **(extra or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command == "HEAD":
            return
        if isinstance(body, bytes):
            self.wfile.write(body)
        else:
            body.seek(0)
            while chunk := body.read(1 << 20):
                self.wfile.write(chunk)

    def log_message(self, format, *args):
        pass  # the URL is printed once by the command; request lines would only be noise


class _Site:
    """What one server answers with: the page, Netron's assets, the model's files, and (once
    the port is known) the Host rule."""

    def __init__(self, model_path):
        self.files = model_files(model_path)
        self.assets = netron_assets()
        first = next(iter(self.files))
        self.model, self.folder = self.files[first], self.files[first].parent
        self.page = netron_page(self.assets["index.html"].read_text("utf-8"), first)
        self.hosts: HostRule | None = None

    def still_inside(self, path: Path) -> bool:
        """The files beside the model are checked again when asked for: one swapped for a
        symlink out of the folder since start-up is not served."""
        return path == self.model or _regular_inside(path, self.folder)


class ViewServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, site: _Site, host: str, port: int):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host.strip("[]"), port), _Handler)
        self.site = site
        site.hosts = HostRule(host, self.server_address[1])

    def server_bind(self):
        # HTTPServer.server_bind looks up the host's FQDN, a DNS query we neither need nor want.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        pass  # a browser that closes a connection mid-response is not an error worth a traceback


def start_server(model_path, host: str, port: int | None) -> tuple[ViewServer, threading.Thread]:
    """Bind (port None: 8080, else 8081, else any free port; 0: any free port) and serve in a
    daemon thread. OSError when the address cannot be bound."""
    site = _Site(model_path)  # bad model or missing Netron: said before anything is bound
    candidates = [port] if port is not None else [8080, 8081, 0]
    for i, candidate in enumerate(candidates):
        try:
            server = ViewServer(site, host, candidate)
            break
        except OSError:
            if i == len(candidates) - 1:
                raise
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="digitkit-view", daemon=True)
    thread.start()
    return server, thread

