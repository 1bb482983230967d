"""The physeg website: build it offline from the executed notebooks, and check it.

One entry point over two modules:

- :mod:`physeg.reproduce.site_build`  ``npm ci`` of the local template,
  ``myst build --html``, staging of a build folder, the build's own checks;
- :mod:`physeg.reproduce.site_check`  local HTTP server, link/anchor/stderr
  crawl, headless-Chromium check of every page.

Command line::

    python -m physeg.reproduce.site                # build <build>/html (default _build/html)
    python -m physeg.reproduce.site --check        # build, then check it (HTTP crawl + Chromium)
    python -m physeg.reproduce.site --check-only   # check an existing build
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from physeg.paths import build_root
from physeg.reproduce.site_build import (
    FATAL_RENDER_PROBLEMS,
    MYST_CONFIG,
    THEME_DIR,
    build_site,
    ensure_theme_installed,
    executed_notebooks,
    myst_executable,
)
from physeg.reproduce.site_check import (
    CHROMIUM_FLAGS,
    check_links,
    check_pages_in_browser,
    check_site,
    find_chromium,
    serve,
    stderr_outputs,
)

__all__ = [
    "CHROMIUM_FLAGS", "FATAL_RENDER_PROBLEMS", "MYST_CONFIG", "THEME_DIR", "build_site", "check_links",
    "check_pages_in_browser", "check_site", "ensure_theme_installed", "executed_notebooks", "find_chromium",
    "main", "myst_executable", "serve", "stderr_outputs",
]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m physeg.reproduce.site``: build and/or check the site; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m physeg.reproduce.site",
        description="Build the physeg website offline from the executed notebooks (MyST + local template).",
    )
    parser.add_argument("--build-dir", type=Path, default=None, help="build folder holding notebooks/ (default: _build)")
    parser.add_argument("--check", action="store_true", help="after building, check every page (HTTP crawl + Chromium)")
    parser.add_argument("--check-only", action="store_true", help="only check an existing build")
    parser.add_argument("--no-browser", action="store_true", help="check links and stderr only, without Chromium")
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
            problems = check_site(html_dir, browser=not args.no_browser)
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
