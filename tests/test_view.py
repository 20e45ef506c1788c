"""digitkit view: the real Netron server, fetched over HTTP; a real Ctrl-C on a real process."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import _chromium
from _cli import run_cli
from digitkit.view import NetronViewer, resolve_viewable


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


@pytest.mark.parametrize("name", ["model.onnx", "model.h5", "saved_model"])
def test_netron_serves_page_and_model_bytes(export_dir, name):
    target = export_dir / name
    with NetronViewer(target, port=0) as viewer:
        assert viewer.address[0] == "127.0.0.1"
        assert viewer.url.startswith("http://127.0.0.1:")
        page = _get(viewer.url).decode()
        served = resolve_viewable(target).name
        assert f'<meta name="file" content="/data/{served}">' in page
        assert _get(viewer.url + "data/" + served) == resolve_viewable(target).read_bytes()
        if name == "saved_model":  # Netron reads the variables beside the graph
            index = target / "variables" / "variables.index"
            assert _get(viewer.url + "data/variables/variables.index") == index.read_bytes()
        # The export directory's other files are not the model's to share.
        root = target if name == "saved_model" else export_dir
        others = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
                  and p != resolve_viewable(target) and p.parent != target / "variables"]
        assert others
        for other in others:
            assert _raw(viewer.address[1], f"/data/{other}")[0] == 404, other
    assert not viewer.alive()


def test_keras_v3_file_is_viewable(tmp_path):

    from digitkit.architectures import build_model

    path = tmp_path / "m.keras"
    build_model("seed-mlp").save(path)
    with NetronViewer(path, port=0) as viewer:
        assert _get(viewer.url + "data/m.keras") == path.read_bytes()


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.onnx", "no such file or directory"),
    (lambda d: (d / "a.txt").write_text("x") and d / "a.txt", "unknown model type ('.txt' files)"),
    (lambda d: d, "not a SavedModel"),
])
def test_bad_paths_are_one_line_errors(tmp_path, make, message):
    result = run_cli("view", make(tmp_path), "--no-browser")
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and line.startswith("digitkit: error: ") and message in line


def _start_cli(args, env=None):
    """Run `digitkit ...` as a real process and wait for the Netron URL on its stdout."""
    proc = subprocess.Popen([sys.executable, "-m", "digitkit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        if m:
            return proc, m.group(1), lines
    proc.kill()
    pytest.fail("no URL printed:\n" + "".join(lines))


def _ctrl_c(proc, lines):
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    return proc.returncode, "".join(lines) + rest


def test_cli_serves_until_ctrl_c(export_dir):
    proc, url, lines = _start_cli(["view", str(export_dir / "model.onnx"), "--port", "0",
                                   "--no-browser"])
    try:
        assert _get(url + "data/model.onnx") == (export_dir / "model.onnx").read_bytes()
    finally:
        code, output = _ctrl_c(proc, lines)
    assert code == 0, output
    assert "Netron stopped" in output and "Traceback" not in output


def test_export_view_opens_the_validated_onnx(seed_mlp_h5, mnist_dir, tmp_path):
    src = tmp_path / "seed.h5"
    shutil.copyfile(seed_mlp_h5, src)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc, url, lines = _start_cli(["export", str(src), "--format", "onnx", "--images", "100",
                                   "--data", str(mnist_dir), "--view", "--no-browser",
                                   "--port", "0"], env=env)
    try:
        served = _get(url + "data/model.onnx")
        assert served == (tmp_path / "export" / "model.onnx").read_bytes()
    finally:
        code, output = _ctrl_c(proc, lines)
    assert code == 0, output
    ok_line = re.search(r"^\[ok\]\s+onnx ", output, re.M)
    assert ok_line and ok_line.start() < output.index("Netron is serving")


# ---------------------------------------------------------------- what is served, to whom

def _small_onnx(folder: Path, name: str = "m.onnx", external: str | None = None) -> Path:
    """A real ONNX graph (Reshape, MatMul, Add, Softmax), its weights inline or in `external`."""
    import numpy as np
    import onnx

    from _onnx_model import write_linear_onnx

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    path = write_linear_onnx(folder / name, rng.random((784, 10), np.float32),
                             np.zeros(10, np.float32))
    if external:
        (folder / external).parent.mkdir(parents=True, exist_ok=True)
        onnx.save(onnx.load(str(path)), str(path), save_as_external_data=True,
                  location=external, size_threshold=0)
    return path


def _raw(port: int, target: str, host: str | None = "127.0.0.1:{port}"):
    """(status, headers, body) for `GET target` sent as is (no client-side normalisation)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
    if host is not None:
        conn.putheader("Host", host.format(port=port))
    conn.endheaders()
    reply = conn.getresponse()
    body = reply.read()
    conn.close()
    return reply.status, reply.headers, body


@pytest.fixture
def model_among_secrets(tmp_path):
    """dir/model.onnx with its weights in dir/weights/w.bin, beside files nobody asked to share."""
    folder = tmp_path / "dir"
    model = _small_onnx(folder, "model.onnx", external="weights/w.bin")
    (folder / "secret.txt").write_text("not for the browser")
    (folder / "sub").mkdir()
    (folder / "sub" / "x").write_text("nor this")
    (tmp_path / "outside.txt").write_text("nor this")
    return model


def test_serves_the_model_and_its_external_data_only(model_among_secrets):
    folder = model_among_secrets.parent
    with NetronViewer(model_among_secrets, port=0) as viewer:
        port = viewer.address[1]
        assert _raw(port, "/data/model.onnx")[2] == model_among_secrets.read_bytes()
        assert _raw(port, "/data/weights/w.bin")[2] == (folder / "weights/w.bin").read_bytes()
        assert _raw(port, "/view.js")[0] == 200  # Netron's own assets
        secret = str(folder / "secret.txt")
        refused = ["/data/secret.txt", "/data/sub/x", "/data/sub/", "/data/", "/data/weights/",
                   "/data/../secret.txt", "/data/weights/../secret.txt",
                   "/data/%2e%2e/outside.txt", "/data/..%2Foutside.txt",
                   "/data/%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "/../../../etc/passwd",
                   "/data/" + secret, "/data/" + urllib.parse.quote(secret, safe=""),
                   "/data//etc/passwd", "//etc/passwd", secret,
                   f"http://127.0.0.1:{port}/data/secret.txt",
                   "/server.py", "/__init__.py", "/%2e%2e/__init__.py", "/data/model.onnx/"]
        answers = {target: _raw(port, target)[0] for target in refused}
    assert all(code in (403, 404) for code in answers.values()), answers


def test_external_data_outside_the_model_folder_is_not_served(tmp_path):
    """A location that leaves the folder, by `..` or by a symlink, is not the model's to share."""
    import onnx

    model = _small_onnx(tmp_path / "dir", external="w.bin")
    (tmp_path / "secret.bin").write_bytes(b"secret")
    proto = onnx.load(str(model), load_external_data=False)
    tensor = next(t for t in proto.graph.initializer if t.name == "W")
    next(e for e in tensor.external_data if e.key == "location").value = "../secret.bin"
    onnx.save(proto, str(tmp_path / "dir" / "escapes.onnx"))
    (tmp_path / "dir" / "link.bin").symlink_to(tmp_path / "secret.bin")
    next(e for e in tensor.external_data if e.key == "location").value = "link.bin"
    onnx.save(proto, str(tmp_path / "dir" / "links.onnx"))
    for name, location in [("escapes.onnx", "../secret.bin"), ("links.onnx", "link.bin")]:
        with NetronViewer(tmp_path / "dir" / name, port=0) as viewer:
            status, _, body = _raw(viewer.address[1], "/data/" + location)
            assert status == 404 and body != b"secret", name
            assert _raw(viewer.address[1], "/data/w.bin")[0] == 200  # the others still load


def test_a_file_swapped_for_a_symlink_after_start_is_not_served(model_among_secrets):
    weights = model_among_secrets.parent / "weights" / "w.bin"
    with NetronViewer(model_among_secrets, port=0) as viewer:
        assert _raw(viewer.address[1], "/data/weights/w.bin")[0] == 200
        weights.unlink()
        weights.symlink_to(model_among_secrets.parent.parent / "outside.txt")
        status, _, body = _raw(viewer.address[1], "/data/weights/w.bin")
    assert status == 404 and b"nor this" not in body


@pytest.mark.parametrize("host, code", [
    ("127.0.0.1:{port}", 200), ("localhost:{port}", 200), ("[::1]:{port}", 200),
    ("evil.example:{port}", 403), ("evil.example", 403), ("127.0.0.1.nip.io:{port}", 403),
    ("127.0.0.1:1", 403), ("127.0.0.1", 403), ("", 403), (None, 403),
])
def test_requests_must_name_this_server_in_host(model_among_secrets, host, code):
    """DNS rebinding: a page on evil.example that points its name at 127.0.0.1 can reach the
    server, but its requests say `Host: evil.example:PORT`, and are refused."""
    with NetronViewer(model_among_secrets, port=0) as viewer:
        for target in ("/", "/data/model.onnx", "/view.js"):
            status, headers, _ = _raw(viewer.address[1], target, host=host)
            assert status == code, (target, host)
            assert headers["Content-Security-Policy"]


def _directives(csp: str) -> dict[str, set[str]]:
    return {name: set(values) for name, *values in
            (part.split() for part in csp.split(";") if part.strip())}


def test_every_response_carries_a_self_only_csp(model_among_secrets):
    with NetronViewer(model_among_secrets, port=0) as viewer:
        port = viewer.address[1]
        answers = [_raw(port, "/"), _raw(port, "/data/model.onnx"), _raw(port, "/index.js"),
                   _raw(port, "/data/secret.txt"), _raw(port, "/", host="evil.example:1")]
    assert [a[0] for a in answers] == [200, 200, 200, 404, 403]
    for _, headers, _ in answers:
        csp = _directives(headers["Content-Security-Policy"])
        assert csp["default-src"] == {"'none'"}
        for name in ("script-src", "connect-src", "img-src", "frame-src", "worker-src",
                     "style-src", "font-src"):
            assert csp[name] <= {"'self'", "'none'", "data:", "blob:", "'unsafe-inline'"}, name
        assert csp["script-src"] == csp["connect-src"] == {"'self'"}
        assert csp["frame-src"] == csp["frame-ancestors"] == {"'none'"}
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cross-Origin-Resource-Policy"] == "same-origin"


# ---------------------------------------------------------------- browser level

@pytest.mark.skipif(_chromium.CHROMIUM is None,
                    reason="chromium not installed (Debian: apt-get install -y chromium)")
def test_first_load_shows_the_graph_and_nothing_leaves_the_machine(tmp_path):
    """A new user's first load, in a fresh headless Chromium tab whose every request goes
    through a logging proxy: the only host asked for is the viewer itself, Netron draws the
    graph with no dialog, and the page breaks no rule of its CSP."""
    model = _small_onnx(tmp_path / "model", "model.onnx")
    with NetronViewer(model, port=0) as viewer:
        server = f"127.0.0.1:{viewer.address[1]}"
        with _chromium.LoggingProxy(allowed=server) as proxy:
            page = _chromium.render(viewer.url, tmp_path / "profile", timeout=60,
                                    proxy=proxy)
    assert server in proxy.hosts, "the proxy saw none of the page's own requests"
    assert set(proxy.hosts) == {server}, f"requests left the machine: {proxy.requests}"
    messages = re.findall(r'id="message-text"[^>]*>([^<]*)', page.html)
    assert "default" in page.body_class.split(), (
        f"Netron did not show a graph: body class {page.body_class!r}, messages {messages}")
    for op in ("Reshape", "MatMul", "Add", "Softmax"):
        assert op in page.html, f"{op} not in the rendered graph ({len(page.html)} bytes)"
    assert "cookies" not in page.html.lower() and not any(messages), messages
    assert page.csp_violations == []


def test_view_module_has_no_tensorflow_import():
    code = ("import sys, digitkit.cli.view, digitkit.view; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parent)
    assert out.stdout.strip() == "False"


def test_view_says_what_convention_a_foreign_model_has(zoo, seed_mlp_h5, tmp_path,
                                                      monkeypatch):
    """Cheaply (no runtime, no data): what the flags declare, what an adapted ONNX records,
    or that a model is not digitkit's contract; nothing for digitkit's own models."""
    from digitkit.model.conventions import ConventionFlags, InputConvention
    from digitkit.predictors.adapted import adapted_onnx
    from digitkit.view import convention_note

    monkeypatch.setenv("DIGITKIT_CACHE", str(tmp_path / "cache"))
    nchw = zoo.path("nchw-onnx-unit")
    assert convention_note(seed_mlp_h5) is None
    assert "made elsewhere" in convention_note(nchw) and "--input-scale" in convention_note(nchw)
    declared = convention_note(nchw, ConventionFlags(scale="unit", outputs="logits"))
    assert declared == "nchw_unit.onnx: declared input convention (N,1,28,28) /255, logits " \
                       "(softmax added)"
    adapted = adapted_onnx(nchw, InputConvention(layout="NCHW", scale="unit", outputs="logits"))
    assert convention_note(adapted).endswith("the source's input convention: (N,1,28,28) "
                                             "/255, logits (softmax added)")
