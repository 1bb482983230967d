"""Build the physeg website offline from the executed notebooks.

The pages are the executed notebooks under ``<build>/notebooks/`` (written by
``python -m physeg.reproduce.runner``). :func:`build_site` runs
``myst build --html`` with the local site template in ``site/theme`` (a small
Node renderer, installed once with ``npm ci`` from the committed lock file), so
no MyST theme is downloaded and nothing but the npm registry (once, for
``npm ci``) is ever contacted. The build fails loudly when a notebook has no
page or when the renderer reports a fatal problem (an equation KaTeX cannot
typeset, a broken internal link, a missing file).

Checking the built site (HTTP crawl, Chromium) lives in
:mod:`physeg.reproduce.site_check`; the command line in
:mod:`physeg.reproduce.site`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from physeg.paths import REPO_ROOT, build_root

log = logging.getLogger("physeg.reproduce.site")

#: The local MyST site template (template.yml, render.mjs, package-lock.json).
THEME_DIR: Path = REPO_ROOT / "site" / "theme"
#: The MyST project file of the repository (pages: _build/notebooks/*.ipynb).
MYST_CONFIG: Path = REPO_ROOT / "myst.yml"

#: Time limits (seconds) of ``npm ci`` and ``myst build``; environment overrides.
NPM_TIMEOUT_S = float(os.environ.get("PHYSEG_NPM_TIMEOUT", 600))
MYST_TIMEOUT_S = float(os.environ.get("PHYSEG_MYST_TIMEOUT", 900))

#: Problems reported by the renderer that make a build fail (others are warnings).
FATAL_RENDER_PROBLEMS = ("math-error", "broken-link", "missing-file")

#: Where nothing listens: MyST's "is there a newer version" request and any API
#: call fail at once instead of waiting on the network.
_NOWHERE = "http://127.0.0.1:9/"


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


def ensure_theme_installed(*, theme_dir: Path = THEME_DIR, timeout: float = NPM_TIMEOUT_S) -> None:
    """Run ``npm ci`` in the site template unless its node_modules match the lock file.

    Only the npm registry is contacted, and only when the lock file changed or
    node_modules is missing. ``timeout`` is in seconds.
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


def _stage_project(*, build_dir: Path, notebooks: Sequence[Path]) -> Path:
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


def _check_build(*, html_dir: Path, notebooks: Sequence[Path], strict: bool = True) -> dict:
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
    project = REPO_ROOT if build_dir == repo_build else _stage_project(build_dir=build_dir, notebooks=notebooks)
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
        _check_build(html_dir=html_dir, notebooks=notebooks, strict=strict)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n--- myst output (tail) ---\n{output[-3000:]}") from exc
    return html_dir
