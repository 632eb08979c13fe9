"""Test utility (not shipped): render a local HTML page in headless Chromium and report what the browser saw.

Selenium drives Debian's `chromium` through Debian's `chromedriver` (given explicitly, so Selenium Manager
never downloads a driver). The network is cut off: host names resolve to nothing and any proxied request goes
to a closed port; chromedriver's performance log (the DevTools Network events) records every request, and
its browser log the console errors."""
from __future__ import annotations

import base64
import json
import shutil
import tempfile
from pathlib import Path

DRIVER = "/usr/bin/chromedriver"  # Debian's chromium-driver

# Flags: no sandbox (we are root in CI), no GPU, no first-run/sync/update traffic, and no network at all.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--mute-audio",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]

# Every <img>'s state once the page has loaded; decode() waits for images still in flight (false if broken).
_IMAGES_JS = """return Promise.all(Array.from(document.images).map(i =>
  (i.complete ? Promise.resolve() : new Promise(r => { i.onload = i.onerror = r; }))
  .then(() => i.decode()).then(() => true, () => false)
  .then(ok => ({src: i.getAttribute('src'), url: i.currentSrc || i.src, complete: i.complete, decoded: ok,
                width: i.naturalWidth, height: i.naturalHeight, shown_width: i.getBoundingClientRect().width,
                in_figure: !!i.closest('figure'),
                caption: ((i.closest('figure') || {querySelector: () => null}).querySelector('figcaption')
                          || {textContent: ''}).textContent.trim()}))))"""
_INFO_JS = ("return {title: document.title, text: (document.body ? document.body.innerText : '').length,"
            " height: document.documentElement.scrollHeight}")


class BrowserError(RuntimeError):
    pass


def find_chromium() -> str | None:
    """The chromium binary, when the whole driving chain is here (chromium, chromedriver, selenium)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None
    if not Path(DRIVER).is_file():
        return None
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def render(html: Path, screenshot: Path, width: int = 1280, max_height: int = 16000, timeout: float = 120) -> dict:
    """Open `html` from file:// and return what the browser saw:
    title, text_length, height, images (one dict per <img>: src, complete, decoded, width, height (natural
    pixels), shown_width (CSS px on the page), in_figure, caption (its <figure>'s <figcaption> text)),
    requests (every URL asked for), remote (requests that were not file:/data:), failed (URL, error),
    console_errors (console/log errors and uncaught exceptions); a full-page PNG is written to `screenshot`."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    exe = find_chromium()
    if exe is None:
        raise BrowserError("no chromium, chromedriver or selenium (Debian: apt-get install chromium chromium-driver)")
    url = Path(html).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="wmhloc_chromium_") as profile:
        opts = webdriver.ChromeOptions()
        opts.binary_location = exe
        for f in FLAGS + [f"--user-data-dir={profile}", f"--window-size={width},900"]:
            opts.add_argument(f)
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        log = Path(profile) / "chromedriver.log"
        try:
            driver = webdriver.Chrome(service=Service(executable_path=DRIVER, log_output=str(log)), options=opts)
        except WebDriverException as e:
            raise BrowserError(f"chromedriver did not start: {e.msg}\n{log.read_text(errors='replace')[-2000:]}") \
                from None
        try:
            return _render(driver, url, Path(screenshot), width, max_height, timeout)
        except WebDriverException as e:
            raise BrowserError(f"{url}: {e.msg}") from None
        finally:
            driver.quit()


def _render(driver, url: str, screenshot: Path, width: int, max_height: int, timeout: float) -> dict:
    driver.set_page_load_timeout(timeout)
    driver.set_script_timeout(timeout)

    def fit_page():  # viewport = whole page: lazy images come into view, the screenshot takes all of it
        info = driver.execute_script(_INFO_JS)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": max(1, min(int(info["height"]), max_height)), "deviceScaleFactor": 1,
            "mobile": False})
        return info

    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    driver.get_log("performance")  # drop what the browser did before (its start page, in other targets)
    driver.get(url)  # returns after the load event
    fit_page()
    images = driver.execute_script(_IMAGES_JS)
    info = fit_page()
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(base64.b64decode(shot["data"]))

    logged = [json.loads(e["message"]) for e in driver.get_log("performance")]
    page = next((m["webview"] for m in logged if m["message"]["method"] == "Network.requestWillBeSent"
                 and m["message"]["params"]["request"]["url"] == url), None)  # the page's own target
    events = [m["message"] for m in logged if m["webview"] == page]
    urls = {}
    for e in events:
        if e["method"] == "Network.requestWillBeSent":
            urls[e["params"]["requestId"]] = e["params"]["request"]["url"]
    failed = [(urls.get(e["params"]["requestId"], "?"), e["params"].get("errorText", ""))
              for e in events if e["method"] == "Network.loadingFailed"]
    # SEVERE: console.error, uncaught exceptions and failed resource loads
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    requests = [u for u in urls.values() if u != "about:blank"]
    return {"url": url, "title": info["title"], "text_length": info["text"], "height": info["height"],
            "images": images, "requests": requests, "failed": failed, "console_errors": errors,
            "remote": [u for u in requests if not u.startswith(("file:", "data:"))], "screenshot": screenshot}


CDN_STYLESHEET = "https://cdn.example.org/style.css"


def break_report(src: Path, dst: Path, imgs: list[str]) -> tuple[str, str]:
    """A copy of the report folder `src` at `dst` with its second figure deleted, its last one emptied and a
    CDN stylesheet linked: what the browser check must catch. Returns (deleted, emptied)."""
    import shutil

    shutil.copytree(src, dst)
    gone, empty = imgs[1], imgs[-1]
    (dst / gone).unlink()
    (dst / empty).write_bytes(b"")
    html = dst / "report.html"
    text = html.read_text(encoding="utf-8")
    html.write_text(text.replace("</head>", f"<link rel='stylesheet' href='{CDN_STYLESHEET}'></head>", 1),
                    encoding="utf-8")
    return gone, empty


def figure_problems(report: Path, images: list[dict], min_pt: float = 9.0) -> list[str]:
    """What is wrong with the figures the browser showed (render()'s images): a figure's smallest text below
    `min_pt` at the width the page shows it (from the sizes figtext.save_figure recorded in the PNG), a PNG
    without that record, an image outside a <figure>, a caption missing or naming a file."""
    import re

    from nnunet_wmhloc.pipeline.figtext import read_figure_info

    out = []
    for i in images:
        src = i["src"]
        info = read_figure_info(Path(report) / src)
        if not info:
            out.append(f"{src}: no recorded font size (not drawn by figtext.save_figure)")
        else:
            shown = info["min_font_pt"] * i["shown_width"] / info["width_px"]
            if shown < min_pt - 1e-6:
                out.append(f"{src}: smallest text {shown:.1f} pt at its displayed width {i['shown_width']:.0f} px")
        cap = i["caption"]
        stem = Path(src).stem
        if not i["in_figure"] or len(cap) < 20 or re.search(r"\.(png|svg|csv)\b", cap) \
                or stem in cap or stem.replace("_", " ") in cap:
            out.append(f"{src}: caption {cap!r} is missing or a file name")
    return out
