"""The family's HTML report in a real browser: headless Chromium renders it, with every request recorded.

Chromium is Debian's `chromium` package (the README's set-up installs it). Without it the test
is skipped with the reason, except on CI (`CI` or `VRAMPLAN_REQUIRE_BROWSER` set), where a missing
browser is a failure.
All of Chromium's traffic is sent to a loopback proxy that records each request; the page must
make none. The report also holds a model whose name is an <img> tag pointing at that proxy.
Chromium itself calls a few Google service hosts at start-up whatever the page (component
updates, network time, accounts) even with background networking disabled: those exact hosts
are set apart; any other request, a CDN included, fails the test.
"""

from __future__ import annotations

import io
import os
import shutil
import socketserver
import subprocess
import threading
from contextlib import redirect_stderr, redirect_stdout
from html.parser import HTMLParser
from pathlib import Path

import pytest

from vramplan.cli import main

pytestmark = pytest.mark.browser

# The browser's own start-up traffic (not the page's): exact host names, so a CDN is never excused.
BROWSER_SERVICE_HOSTS = {"update.googleapis.com", "accounts.google.com", "clients2.google.com",
                         "clientservices.googleapis.com", "safebrowsing.googleapis.com", "redirector.gvt1.com",
                         "optimizationguide-pa.googleapis.com", "content-autofill.googleapis.com"}

FAMILY = ["dinov3-convnext-base", "dinov3-convnext-large", "dinov3-convnext-small", "dinov3-convnext-tiny",
          "dinov3-vit7b16", "dinov3-vit7b16-sat493m", "dinov3-vitb16", "dinov3-vith16plus", "dinov3-vitl16",
          "dinov3-vitl16-sat493m", "dinov3-vits16", "dinov3-vits16plus"]


def _browser() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI") or os.environ.get("VRAMPLAN_REQUIRE_BROWSER"):
        pytest.fail("Chromium is missing on CI: the README's set-up installs Debian's `chromium` package")
    pytest.skip("headless Chromium not installed (apt-get install -y chromium; see the README's set-up)")


class _Recorder(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self) -> None:
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(4096).decode("latin-1").strip()
        if line:
            self.server.requests.append(line)
        self.wfile.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


class _Dom(HTMLParser):
    """Tags (with classes) and text of the rendered DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs).get("class") or ""))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def recorder():
    server = _Recorder()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def family_report(tmp_path_factory, recorder):
    out = tmp_path_factory.mktemp("browser") / "dinov3.html"
    bad = f'<img src="http://127.0.0.1:{recorder.server_address[1]}/leak">'
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        code = main(["report", *FAMILY, bad, "--mode", "inference", "--image-size", "224,256", "--batch-size", "1,2",
                     "--gpu", "rtx4090", "--gpu", "t4", "--fit", "--format", "html", "-o", str(out)])
    assert code == 1  # the one bad name fails alone
    return out, bad


def _chromium(browser: str, proxy_port: int, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
        f"--proxy-server=http://127.0.0.1:{proxy_port}", "--proxy-bypass-list=<-loopback>",
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking", "--disable-sync",
        "--disable-component-update", "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
        "--disable-domain-reliability", "--disable-client-side-phishing-detection",
        "--disable-features=OptimizationHints,MediaRouter,Translate,NetworkTimeServiceQuerying",
    ]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120)


def test_family_report_in_headless_chromium(family_report, recorder, tmp_path):
    browser = _browser()
    path, bad = family_report
    port = recorder.server_address[1]
    dumped = _chromium(browser, port, tmp_path / "profile", "--virtual-time-budget=3000", "--dump-dom", path.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    shot = tmp_path / "dinov3.png"
    taken = _chromium(browser, port, tmp_path / "profile2", "--window-size=1280,3200", f"--screenshot={shot}",
                      path.as_uri())
    assert taken.returncode == 0 and shot.stat().st_size > 50_000, taken.stderr[-2000:]

    dom = _Dom()
    dom.feed(dumped.stdout)
    text = "".join(dom.text)
    classes = [cls for _, cls in dom.tags]
    for name in FAMILY:  # every model of the family, by its full id, in the rendered page
        model_id = f"facebook/{name.replace('-sat493m', '')}-pretrain-{'sat493m' if 'sat493m' in name else 'lvd1689m'}"
        assert text.count(model_id) >= 4, model_id  # summary, bar, fit matrix, precision table
    assert {"chart breakdown", "chart by-size", "chart by-batch", "fit-matrix"} <= set(classes)
    assert sum(1 for tag, cls in dom.tags if tag == "table" and cls == "fit-matrix") == 2  # one per input size
    assert classes.count("fit-many") >= 2 * 2 * 12 - 4  # cards x sizes x models, nearly all green
    assert sum(1 for tag, _ in dom.tags if tag == "rect") > 12 * 4  # bars drawn
    # the HTML-named model is text, not an element
    assert bad in text
    assert not any(tag == "img" for tag, _ in dom.tags)
    # and the page fetched nothing: not the <img> URL, not a CDN, nothing
    page_requests = [r for r in recorder.requests if _host(r) not in BROWSER_SERVICE_HOSTS]
    assert page_requests == []


def _host(request_line: str) -> str:
    """The host of `CONNECT host:443 HTTP/1.1` or `GET http://host/path HTTP/1.1`."""
    target = request_line.split()[1] if len(request_line.split()) > 1 else ""
    target = target.split("://", 1)[-1]
    return target.split("/", 1)[0].rsplit(":", 1)[0]


def test_host_of_request_lines():
    assert _host("CONNECT update.googleapis.com:443 HTTP/1.1") == "update.googleapis.com"
    assert _host("GET http://127.0.0.1:9/leak HTTP/1.1") == "127.0.0.1"
    assert _host("GET http://cdn.jsdelivr.net/npm/x.js HTTP/1.1") not in BROWSER_SERVICE_HOSTS
