"""The whole paper on the ``smoke`` profile: every notebook, the site, the browser check.

Every executed notebook must be free of errors and of stderr output (warnings,
progress bars) and carry the runner's provenance header right after the
injected parameters; every page of the site must pass the link/stderr crawl
and, where Chromium is installed, the browser check.

This is what ``make paper`` does, at CI size and in an isolated cache, so the
results on the built pages are computed in this run and not read from an
earlier one.
"""

from __future__ import annotations

import json

import nbformat
import pytest

from physeg.reproduce import provenance, runner as paper, site
from physeg.paths import notebooks_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def smoke_chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    mp = pytest.MonkeyPatch()
    mp.setenv("PHYSEG_CACHE", str(root / "cache"))
    mp.setenv("PHYSEG_BUILD", str(root / "build"))
    try:
        runs = paper.run_paper(profile="smoke", build_site=True)
        yield root / "build", runs
    finally:
        mp.undo()


def test_every_notebook_executed_in_order(smoke_chain):
    build, runs = smoke_chain
    expected = [p.stem for p in paper.discover_notebooks(notebooks_dir())]
    assert [r.executed.stem for r in runs] == expected
    for run in runs:
        nb = nbformat.read(run.executed, as_version=4)
        assert nb.metadata["papermill"]["parameters"] == {"profile": "smoke"}
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], f"{run.executed.name} has error outputs"
        stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
        assert not stderr, f"{run.executed.name} writes to stderr: {stderr[0][:300]!r}"
        tags = [c.metadata.get("tags", []) for c in nb.cells]
        injected = next(i for i, t in enumerate(tags) if "injected-parameters" in t)
        assert provenance.HEADER_TAG in tags[injected + 1], f"{run.executed.name}: no provenance header"
        assert nb.cells[injected + 1].metadata["physeg_provenance"]["profile"] == "smoke"
    timings = json.loads((build / "timings.json").read_text())
    assert set(timings["seconds"]) == {r.source.name for r in runs}


def test_site_pages_render_in_chromium(smoke_chain):
    build, runs = smoke_chain
    html = build / "html"
    assert (html / "index.html").is_file(), "the overview page is the site's index"
    manifest = json.loads((html / "site-manifest.json").read_text())
    assert len(manifest["pages"]) == len(runs), "one page per executed notebook"
    problems = site.check_site(html, browser=False)  # links, anchors, no stderr on any page
    assert problems == [], "\n".join(problems)
    for page in manifest["pages"]:
        assert '<aside class="provenance"' in (html / page["file"]).read_text(), f"{page['file']}: no provenance header"
    if site.find_chromium() is None:
        pytest.skip("chromium/chromedriver not installed (bash site/install_browser.sh needs root or sudo)")
    problems = site.check_site(html, require_math=True, require_figure=True)
    assert problems == [], "\n".join(problems)
