"""digitkit view: the real Netron server, fetched over HTTP; a real Ctrl-C on a real process."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
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


# ---------------------------------------------------------------- browser level (optional)

@pytest.fixture
def consent_page():
    """A page on 127.0.0.1 (another port) that pre-accepts Netron's cookie notice, then jumps.

    Netron's web app waits for a click on "Accept" before it opens a model; cookies are
    shared across ports of one host, so setting its `consent` cookie here skips the click.
    """
    import http.server
    import threading

    target = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = ('<script>document.cookie = "consent=" + Date.now() + "; path=/; '
                    f'max-age=3600"; location.replace("{target["url"]}");</script>').encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield target, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(_chromium.CHROMIUM is None,
                    reason="chromium not installed (Debian: apt-get install -y chromium)")
def test_headless_chromium_renders_the_graph(export_dir, tmp_path, consent_page):
    """Netron really draws the ONNX graph: its operators appear in the rendered page."""
    target, start_url = consent_page
    with NetronViewer(export_dir / "model.onnx", port=0) as viewer:
        target["url"] = viewer.url
        body_class, html = _chromium.render(start_url, tmp_path / "profile")
    messages = re.findall(r'id="message-text"[^>]*>([^<]*)', html)
    assert "default" in body_class.split(), (
        f"Netron did not show a graph: body class {body_class!r}, messages {messages}")
    for op in ("MatMul", "Softmax", "Relu"):
        assert op in html, f"{op} not in the rendered graph ({len(html)} bytes of HTML)"


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
    from digitkit.predictors.sources import adapted_onnx
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
