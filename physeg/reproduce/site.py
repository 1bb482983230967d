"""Build the physeg website offline from the executed notebooks, and check it.

The pages are the executed notebooks under ``<build>/notebooks/`` (written by
``python -m physeg.reproduce.runner``). :func:`build_site` runs ``myst build --html`` with
the local site template in ``site/theme`` (a small Node renderer, installed
with ``npm ci`` from the committed lock file), so no MyST theme is downloaded
and nothing but the npm registry (once, for ``npm ci``) is ever contacted.

:func:`check_site` serves a built site from a local HTTP server and checks it:
every page and every internal link, stylesheet and image answers HTTP 200,
and, in a real headless Chromium, every page loads without console errors,
every KaTeX equation has a size, and every figure decodes.

Command line::

    python -m physeg.reproduce.site                # build <build>/html (default _build/html)
    python -m physeg.reproduce.site --check        # build, then check it in Chromium
    python -m physeg.reproduce.site --check-only   # check an existing build
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import html.parser
import http.server
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from physeg.paths import REPO_ROOT, build_root

log = logging.getLogger("physeg.reproduce.site")

#: The local MyST site template (template.yml, render.mjs, package-lock.json).
THEME_DIR: Path = REPO_ROOT / "site" / "theme"
#: The MyST project file of the repository (pages: _build/notebooks/*.ipynb).
MYST_CONFIG: Path = REPO_ROOT / "myst.yml"

NPM_TIMEOUT_S = float(os.environ.get("PHYSEG_NPM_TIMEOUT", 600))
MYST_TIMEOUT_S = float(os.environ.get("PHYSEG_MYST_TIMEOUT", 900))

#: Problems reported by the renderer that make a build fail (others are warnings).
FATAL_RENDER_PROBLEMS = ("math-error", "broken-link", "missing-file")

#: Where nothing listens: MyST's "is there a newer version" request and any API
#: call fail at once instead of waiting on the network.
_NOWHERE = "http://127.0.0.1:9/"

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


# --------------------------------------------------------------------------- build


def _run(cmd: Sequence[str], *, cwd: Path, env: dict[str, str] | None, timeout: float, what: str) -> str:
    """Run a command, return its output; RuntimeError with the output tail on failure or timeout."""
    log.info("%s: %s (in %s)", what, " ".join(map(str, cmd)), cwd)
    try:
        proc = subprocess.run(
            list(map(str, cmd)),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except FileNotFoundError as exc:
        raise RuntimeError(f"{what}: cannot run {cmd[0]!r} ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else (exc.output or "")
        raise RuntimeError(f"{what}: timed out after {timeout:.0f} s\n{out[-4000:]}") from exc
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: exit status {proc.returncode}\n{proc.stdout[-6000:]}")
    return proc.stdout


def ensure_theme_installed(theme_dir: Path = THEME_DIR, *, timeout: float = NPM_TIMEOUT_S) -> None:
    """Run ``npm ci`` in the site template unless its node_modules match the lock file.

    Only the npm registry is contacted, and only when the lock file changed or
    node_modules is missing.
    """
    lock = theme_dir / "package-lock.json"
    if not lock.is_file():
        raise RuntimeError(f"{lock} is missing; the site template cannot be installed")
    stamp = theme_dir / "node_modules" / ".physeg-lock-sha256"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found: install Node.js >= 20 with npm to build the site")
    t0 = time.monotonic()
    _run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error", "--prefer-offline"],
        cwd=theme_dir,
        env={**os.environ, "npm_config_update_notifier": "false"},
        timeout=timeout,
        what="npm ci (site/theme)",
    )
    stamp.write_text(digest + "\n")
    log.info("npm ci: %.1f s", time.monotonic() - t0)


def myst_executable() -> str:
    """The ``myst`` command of this Python environment (mystmd from PyPI)."""
    local = Path(sys.executable).parent / "myst"
    if local.is_file():
        return str(local)
    found = shutil.which("myst")
    if found is None:
        raise RuntimeError("the `myst` command (PyPI package mystmd) is not installed in this environment")
    return found


def _myst_env() -> dict[str, str]:
    """Environment for ``myst``: no update check, no API calls, no theme download."""
    env = dict(os.environ)
    env["npm_config_registry"] = _NOWHERE  # MyST's "newer version?" check reads the npm registry setting
    env["API_URL"] = _NOWHERE.rstrip("/")  # api.mystmd.org (template downloads) unreachable on purpose
    env.pop("BASE_URL", None)  # the site uses relative links; a base URL is never needed
    env.pop("HOST", None)
    env["NO_COLOR"] = "1"
    return env


def executed_notebooks(build_dir: Path) -> list[Path]:
    """Executed notebooks of a build folder, sorted by name (= page order)."""
    return sorted((Path(build_dir) / "notebooks").glob("*.ipynb"))


def _stage_project(build_dir: Path, notebooks: Sequence[Path]) -> Path:
    """A MyST project folder for a build folder other than the repository's ``_build``.

    ``<build>/site-project/`` gets the repository ``myst.yml`` (template path
    made absolute) and a copy of the notebooks under ``_build/notebooks``, the
    same layout as the repository, so the same glob applies.
    """
    project = build_dir / "site-project"
    if project.exists():
        shutil.rmtree(project)
    nb_dir = project / "_build" / "notebooks"
    nb_dir.mkdir(parents=True)
    for nb in notebooks:
        shutil.copy2(nb, nb_dir / nb.name)
    text = MYST_CONFIG.read_text()
    if "template: ./site/theme" not in text:
        raise RuntimeError(f"{MYST_CONFIG} must set `template: ./site/theme` under `site:`")
    text = text.replace("template: ./site/theme", f"template: {json.dumps(str(THEME_DIR))}")
    (project / "myst.yml").write_text(text)
    return project


def _check_build(html_dir: Path, notebooks: Sequence[Path], *, strict: bool = True) -> dict:
    """Check a rendered site against its notebooks; return the manifest or raise RuntimeError."""
    index = html_dir / "index.html"
    manifest_file = html_dir / "site-manifest.json"
    if not index.is_file() or not manifest_file.is_file():
        raise RuntimeError(f"site build produced no {index} / {manifest_file.name}")
    manifest = json.loads(manifest_file.read_text())
    pages = manifest.get("pages", [])
    by_source = {Path(p["source"]).name: p for p in pages if p.get("source")}
    missing = [nb.name for nb in notebooks if nb.name not in by_source]
    absent = [p["file"] for p in pages if not (html_dir / p["file"]).is_file()]
    errors = []
    if missing:
        errors.append(f"no page for executed notebook(s): {', '.join(missing)}")
    if absent:
        errors.append(f"page file(s) not written: {', '.join(absent)}")
    if len(pages) != len(notebooks):
        errors.append(f"{len(pages)} pages for {len(notebooks)} notebooks")
    fatal = [p for p in manifest.get("problems", []) if strict and p.get("kind") in FATAL_RENDER_PROBLEMS]
    for p in manifest.get("problems", []):
        if p not in fatal:
            log.warning("site: %s on page %s: %s", p.get("kind"), p.get("page"), p.get("message"))
    errors += [f"{p['kind']} on page {p['page']}: {p['message']}" for p in fatal]
    if errors:
        raise RuntimeError("site build check failed:\n  " + "\n  ".join(errors))
    return manifest


def build_site(*, build_dir: Path | None = None, strict: bool = True, timeout: float = MYST_TIMEOUT_S) -> Path:
    """Build the static website from the executed notebooks; return the html folder.

    ``build_dir`` is the build folder holding ``notebooks/*.ipynb`` (default
    :func:`physeg.paths.build_root`, i.e. ``_build``). For the repository's own
    ``_build`` MyST runs at the repository root with ``myst.yml``; for any other
    folder a project is staged in ``<build_dir>/site-project``. The site is
    always returned as ``<build_dir>/html``.

    Raises RuntimeError when there are no executed notebooks, when ``npm ci``
    or ``myst build`` fails or times out, when a notebook has no page, or (with
    ``strict``) when an equation could not be typeset or a link/file is broken.
    """
    build_dir = Path(build_dir) if build_dir is not None else build_root()
    build_dir = build_dir.resolve()
    notebooks = executed_notebooks(build_dir)
    if not notebooks:
        raise RuntimeError(
            f"no executed notebooks in {build_dir / 'notebooks'}: run `python -m physeg.reproduce.runner` first"
        )
    ensure_theme_installed()

    repo_build = (REPO_ROOT / "_build").resolve()
    project = REPO_ROOT if build_dir == repo_build else _stage_project(build_dir, notebooks)
    t0 = time.monotonic()
    output = _run(
        [myst_executable(), "build", "--html"],
        cwd=project,
        env=_myst_env(),
        timeout=timeout,
        what="myst build --html",
    )
    log.debug("myst output:\n%s", output)
    for line in output.splitlines():
        if line.lstrip().startswith(("\u26d4", "\u26a0")):  # MyST's error / warning markers
            log.warning("myst: %s", line.strip())
    log.info("myst build --html: %.1f s", time.monotonic() - t0)

    html_dir = project / "_build" / "html"
    if project != REPO_ROOT:
        target = build_dir / "html"
        if target.exists():
            shutil.rmtree(target)
        if html_dir.is_dir():
            shutil.move(str(html_dir), str(target))
        html_dir = target
    try:
        _check_build(html_dir, notebooks, strict=strict)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n--- myst output (tail) ---\n{output[-3000:]}") from exc
    return html_dir


# --------------------------------------------------------------------------- serve


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


def _http_get(url: str, timeout: float = 30) -> tuple[int, bytes, str]:
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
    by links from the index.
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
        parser = _LinkParser()
        parser.feed(body.decode("utf-8", errors="replace"))
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


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m physeg.reproduce.site",
        description="Build the physeg website offline from the executed notebooks (MyST + local template).",
    )
    parser.add_argument("--build-dir", type=Path, default=None, help="build folder holding notebooks/ (default: _build)")
    parser.add_argument("--check", action="store_true", help="after building, check every page in headless Chromium")
    parser.add_argument("--check-only", action="store_true", help="only check an existing build")
    parser.add_argument("--no-strict", action="store_true", help="build even with equations KaTeX cannot typeset")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.check_only:
            html_dir = (args.build_dir or build_root()) / "html"
        else:
            html_dir = build_site(build_dir=args.build_dir, strict=not args.no_strict)
            print(f"site: {html_dir / 'index.html'}")
        if args.check or args.check_only:
            problems = check_site(html_dir)
            for p in problems:
                print(f"site check: {p}", file=sys.stderr)
            if problems:
                return 1
            print("site check: ok")
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
