"""Check a built physeg website: local HTTP crawl and a real headless Chromium.

:func:`check_site` serves a built site (``<build>/html``) from a local HTTP
server below a URL prefix (which proves every link is relative) and checks:

- every page and every internal link, anchor, stylesheet and image answers
  HTTP 200 and every page of the manifest is reachable from ``index.html``;
- no page shows stderr output of a notebook cell (warnings, progress bars):
  a page of the paper must read as prose, tables and figures;
- in headless Chromium (selenium), every page loads without console errors,
  every KaTeX equation has a size and every figure decodes.

Building the site lives in :mod:`physeg.reproduce.site_build`.
"""

from __future__ import annotations

import contextlib
import functools
import html
import html.parser
import http.server
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger("physeg.reproduce.site")

#: Flags of the headless Chromium that loads every page (no network, no GPU).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)

#: How the site template (site/theme/render.mjs) writes a cell's stderr stream.
_STDERR_RE = re.compile(r'<pre class="output-stream stderr">(.*?)</pre>', re.S)


def stderr_outputs(page_html: str) -> list[str]:
    """Text of every stderr stream output rendered on a page (empty: none)."""
    return [html.unescape(m.group(1)) for m in _STDERR_RE.finditer(page_html)]



class _PrefixHandler(http.server.SimpleHTTPRequestHandler):
    """Serve a folder below a URL prefix, quietly (proves links are relative)."""

    prefix = "/"

    def translate_path(self, path: str) -> str:
        clean = urllib.parse.urlsplit(path).path
        if not clean.startswith(self.prefix):
            return os.path.join(self.directory, "\0nonexistent")
        return super().translate_path("/" + clean[len(self.prefix) :])

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        log.debug("http: " + format, *args)


@contextlib.contextmanager
def serve(html_dir: Path, *, prefix: str = "/physeg/site/") -> Iterator[str]:
    """Serve ``html_dir`` on 127.0.0.1 (free port) under ``prefix``; yields the base URL."""
    handler_class = type("_Handler", (_PrefixHandler,), {"prefix": prefix})
    handler = functools.partial(handler_class, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{prefix}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --------------------------------------------------------------------------- check: links


class _LinkParser(html.parser.HTMLParser):
    """Collect href/src targets of a page (a, link, img, script, source)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)
            if value and ((name == "href" and tag in ("a", "link")) or (name == "src" and tag in ("img", "script", "source", "iframe"))):
                self.links.append((tag, value))


def _http_get(url: str, *, timeout: float = 30) -> tuple[int, bytes, str]:
    """(HTTP status, body, content type) of a GET; status 0 when nothing answered (timeout in s)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - local server only
            return resp.status, resp.read(), resp.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        return exc.code, b"", ""
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc).encode(), ""


def check_links(base_url: str, *, expected_pages: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """Crawl a served site from ``index.html``; return (page URLs, problems).

    Every internal ``href``/``src`` must answer HTTP 200; every page in
    ``expected_pages`` (file names relative to the site root) must be reachable
    by links from the index; no page may show a cell's stderr output.
    """
    problems: list[str] = []
    root = urllib.parse.urlsplit(base_url)
    start = urllib.parse.urljoin(base_url, "index.html")
    queue, seen, pages, checked = [start], {start}, [], {}
    ids: dict[str, set[str]] = {}  # page URL -> element ids
    anchors: list[tuple[str, str, str]] = []  # (from page, target page, fragment)
    while queue:
        url = queue.pop(0)
        status, body, ctype = _http_get(url)
        if status != 200:
            problems.append(f"page {url}: HTTP {status}")
            continue
        pages.append(url)
        text = body.decode("utf-8", errors="replace")
        for stream in stderr_outputs(text):
            first = (stream.strip().splitlines() or ["(blank)"])[0][:200]
            problems.append(f"{url}: stderr output on the page: {first}")
        parser = _LinkParser()
        parser.feed(text)
        ids[url] = parser.ids
        for tag, link in parser.links:
            target = urllib.parse.urljoin(url, link)
            parts = urllib.parse.urlsplit(target)
            if tag == "a" and parts.fragment and parts.netloc == root.netloc:
                anchors.append((url, urllib.parse.urlunsplit(parts._replace(fragment="")), parts.fragment))
            if parts.scheme in ("data", "mailto", "javascript"):
                continue
            if parts.netloc != root.netloc:
                if parts.scheme in ("http", "https", ""):
                    log.debug("external link not checked: %s", target)
                continue
            target = urllib.parse.urlunsplit(parts._replace(fragment=""))
            if not parts.path.startswith(root.path):
                problems.append(f"{url}: link {link!r} leaves the site folder (not relative?)")
                continue
            if tag == "a" and target.endswith(".html"):
                if target not in seen:
                    seen.add(target)
                    queue.append(target)
                continue
            if target not in checked:
                checked[target] = _http_get(target)[0]
            if checked[target] != 200:
                problems.append(f"{url}: {tag} {link!r} -> HTTP {checked[target]}")
    for page, target, fragment in anchors:
        if target in ids and urllib.parse.unquote(fragment) not in ids[target]:
            problems.append(f"{page}: link to #{fragment} on {target}: no such anchor")
    for name in expected_pages:
        url = urllib.parse.urljoin(base_url, name)
        if url not in pages:
            problems.append(f"expected page {name} is not reachable from index.html")
    return pages, problems


# --------------------------------------------------------------------------- check: browser


def find_chromium() -> tuple[str, str] | None:
    """Paths of (chromium, chromedriver), or None when either is missing."""
    browser = os.environ.get("PHYSEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("PHYSEG_CHROMEDRIVER") or shutil.which("chromedriver")
    for path in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if browser is None and path.endswith("chromium") and Path(path).exists():
            browser = path
        if driver is None and path.endswith("chromedriver") and Path(path).exists():
            driver = path
    if browser and driver:
        return browser, driver
    return None


# Runs in each page once it has loaded; returns a list of problems.
_PAGE_PROBE_JS = """
const done = arguments[arguments.length - 1];
(async () => {
  await document.fonts.ready;
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map((img) => img.complete ? null :
      new Promise((r) => { img.onload = img.onerror = r; setTimeout(r, 10000); })));
  const problems = [];
  if (!document.querySelector('nav.sidebar a[href]')) problems.push('no navigation sidebar');
  if (!document.querySelector('main h1, article h1')) problems.push('no page title (h1)');
  for (const el of document.querySelectorAll('.math-error, .katex-error'))
    problems.push('equation not typeset: ' + (el.textContent || '').trim().slice(0, 80));
  let katex = 0;
  for (const el of document.querySelectorAll('.katex')) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.height > 0) katex += 1;
    else problems.push('KaTeX element without size: ' + (el.textContent || '').slice(0, 60));
  }
  const mathml = document.querySelector('.katex .katex-mathml');
  if (mathml && getComputedStyle(mathml).position !== 'absolute')
    problems.push('KaTeX stylesheet not applied');
  if (katex && !document.fonts.check('16px KaTeX_Main'))
    problems.push('KaTeX fonts not loaded');
  let figures = 0;
  for (const img of imgs) {
    if (img.complete && img.naturalWidth > 0) figures += 1;
    else problems.push('image did not load: ' + img.getAttribute('src'));
  }
  done({problems, katex, figures, title: document.title});
})().catch((e) => done({problems: ['probe failed: ' + e], katex: 0, figures: 0, title: ''}));
"""


def check_pages_in_browser(
    urls: Sequence[str], *, chromium: str | None = None, chromedriver: str | None = None, timeout: float = 60
) -> tuple[list[str], dict[str, dict]]:
    """Load every URL in headless Chromium (selenium); return (problems, per-page stats)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if chromium is None or chromedriver is None:
        found = find_chromium()
        if found is None:
            raise RuntimeError("chromium/chromedriver not found: run `bash site/install_browser.sh`")
        chromium, chromedriver = chromium or found[0], chromedriver or found[1]
    problems: list[str] = []
    stats: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="physeg-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=chromedriver)
        driver = webdriver.Chrome(service=service, options=options)
        try:
            driver.set_page_load_timeout(timeout)
            driver.set_script_timeout(timeout)
            for url in urls:
                driver.get(url)
                result = driver.execute_async_script(_PAGE_PROBE_JS)
                stats[url] = result
                problems += [f"{url}: {p}" for p in result["problems"]]
                for entry in driver.get_log("browser"):
                    if entry.get("level") == "SEVERE":
                        problems.append(f"{url}: console error: {entry.get('message')}")
        finally:
            driver.quit()
    return problems, stats


def check_site(
    html_dir: Path,
    *,
    expected_pages: Sequence[str] | None = None,
    require_math: bool = False,
    require_figure: bool = False,
    browser: bool = True,
) -> list[str]:
    """Serve ``html_dir`` locally and return every problem found (empty list: the site is fine).

    ``expected_pages`` defaults to the pages listed in ``site-manifest.json``.
    ``require_math`` / ``require_figure``: at least one rendered equation /
    decoded image must exist somewhere in the site.
    """
    html_dir = Path(html_dir)
    problems: list[str] = []
    if expected_pages is None:
        manifest = html_dir / "site-manifest.json"
        expected_pages = (
            [p["file"] for p in json.loads(manifest.read_text())["pages"]] if manifest.is_file() else ["index.html"]
        )
    with serve(html_dir) as base:
        pages, link_problems = check_links(base, expected_pages=expected_pages)
        problems += link_problems
        if browser:
            browser_problems, stats = check_pages_in_browser(pages)
            problems += browser_problems
            if require_math and not any(s["katex"] for s in stats.values()):
                problems.append("no rendered KaTeX equation anywhere in the site")
            if require_figure and not any(s["figures"] for s in stats.values()):
                problems.append("no loaded figure anywhere in the site")
    return problems
