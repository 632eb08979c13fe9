"""Test utility (not shipped): render a local HTML page in headless Chromium and report what the browser saw.

Talks the Chrome DevTools Protocol over `--remote-debugging-pipe` (NUL-separated JSON on fds 3/4), so it needs
only the standard library and a `chromium` binary (Debian's package). The network is cut off: host names resolve
to nothing and any proxied request goes to a closed port; every request that is not file:/data: is recorded."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

# Flags: no sandbox (we are root in CI), no GPU, no first-run/sync/update traffic, and no network at all.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--mute-audio",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
         "--remote-debugging-pipe"]

# Every <img>'s state once the page has loaded; decode() waits for images still in flight (false if broken).
_IMAGES_JS = """Promise.all(Array.from(document.images).map(i =>
  (i.complete ? Promise.resolve() : new Promise(r => { i.onload = i.onerror = r; }))
  .then(() => i.decode()).then(() => true, () => false)
  .then(ok => ({src: i.getAttribute('src'), url: i.currentSrc || i.src, complete: i.complete, decoded: ok,
                width: i.naturalWidth, height: i.naturalHeight}))))"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class _Pipe:
    """One DevTools connection: commands get replies by id; events are kept in order."""

    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int):
        self.proc, self.wfd, self.rfd = proc, to_browser, from_browser
        self.buf, self.next_id, self.events = b"", 0, []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("timed out waiting for the browser")
            ready, _, _ = select.select([self.rfd], [], [], left)
            if ready:
                chunk = os.read(self.rfd, 1 << 20)
                if not chunk:
                    raise BrowserError(f"browser exited (code {self.proc.poll()})")
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.wfd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, session: str, timeout: float, start: int = 0) -> dict:
        """The first `method` event of `session` from index `start` on (waits for it)."""
        for ev in self.events[start:]:
            if ev["method"] == method and ev.get("sessionId") == session:
                return ev
        deadline = time.monotonic() + timeout
        while True:
            ev = self._read_message(deadline)
            if "method" in ev:
                self.events.append(ev)
                if ev["method"] == method and ev.get("sessionId") == session:
                    return ev


def render(html: Path, screenshot: Path, width: int = 1280, max_height: int = 16000, timeout: float = 120) -> dict:
    """Open `html` from file:// and return what the browser saw:
    title, text_length, height, images (one dict per <img>: src, complete, decoded, width, height),
    requests (every URL asked for), remote (requests that were not file:/data:), failed (URL, error),
    console_errors (console/log errors and uncaught exceptions); a full-page PNG is written to `screenshot`."""
    exe = find_chromium()
    if exe is None:
        raise BrowserError("no chromium on PATH")
    url = Path(html).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="wmhloc_chromium_") as profile:
        to_r, to_w = os.pipe()      # we write commands, browser reads on its fd 3
        from_r, from_w = os.pipe()  # browser writes replies on its fd 4, we read

        def child_fds():  # in the child: pipe ends onto fds 3/4 (via fds >= 10, so neither clobbers the other)
            r, w = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)  # inheritable; Python's own fds are not (PEP 446), so close_fds=False leaks nothing
            os.dup2(w, 4)

        log = open(Path(profile) / "chromium.log", "wb")
        proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},900",
                                 "about:blank"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                preexec_fn=child_fds, close_fds=False)
        os.close(to_r)
        os.close(from_w)
        pipe = _Pipe(proc, to_w, from_r)
        try:
            return _render(pipe, url, Path(screenshot), width, max_height, timeout)
        except BrowserError as e:
            log.flush()
            tail = (Path(profile) / "chromium.log").read_text(errors="replace")[-2000:]
            raise BrowserError(f"{e}\n--- chromium log ---\n{tail}") from None
        finally:
            try:
                pipe.call("Browser.close", timeout=10)
            except (BrowserError, OSError):
                pass
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(to_w)
            os.close(from_r)
            log.close()


def _render(pipe: _Pipe, url: str, screenshot: Path, width: int, max_height: int, timeout: float) -> dict:
    target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    s = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Network", "Runtime", "Log"):
        pipe.call(f"{domain}.enable", session=s)
    pipe.call("Emulation.setDeviceMetricsOverride",
              {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=s)
    mark = len(pipe.events)
    nav = pipe.call("Page.navigate", {"url": url}, session=s)
    if nav.get("errorText"):
        raise BrowserError(f"{url}: {nav['errorText']}")
    pipe.wait_event("Page.loadEventFired", s, timeout, start=mark)
    info_js = {"expression": "({title: document.title, text: (document.body ? document.body.innerText : '').length,"
                             " height: document.documentElement.scrollHeight})", "returnByValue": True}

    def fit_page():  # viewport = whole page: lazy images come into view, the screenshot takes all of it
        info = pipe.call("Runtime.evaluate", info_js, session=s)["result"]["value"]
        pipe.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": max(1, min(int(info["height"]),
                  max_height)), "deviceScaleFactor": 1, "mobile": False}, session=s)
        return info

    fit_page()
    images = pipe.call("Runtime.evaluate", {"expression": _IMAGES_JS, "awaitPromise": True, "returnByValue": True},
                       session=s, timeout=timeout)["result"]["value"]
    info = fit_page()
    shot = pipe.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False},
                     session=s, timeout=timeout)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(base64.b64decode(shot["data"]))

    events = [e for e in pipe.events[mark:] if e.get("sessionId") == s]
    urls = {}
    for e in events:
        if e["method"] == "Network.requestWillBeSent":
            urls[e["params"]["requestId"]] = e["params"]["request"]["url"]
    failed = [(urls.get(e["params"]["requestId"], "?"), e["params"].get("errorText", ""))
              for e in events if e["method"] == "Network.loadingFailed"]
    errors = []
    for e in events:
        p = e["params"]
        if e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
            errors.append(f"{p['entry'].get('url', '')}: {p['entry']['text']}")
        elif e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif e["method"] == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            errors.append(f"{d.get('text', '')} {d.get('exception', {}).get('description', '')}".strip())
    requests = list(urls.values())
    return {"url": url, "title": info["title"], "text_length": info["text"], "height": info["height"],
            "images": images, "requests": requests, "failed": failed, "console_errors": errors,
            "remote": [u for u in requests if not u.startswith(("file:", "data:"))], "screenshot": screenshot}
