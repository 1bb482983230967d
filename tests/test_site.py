"""The offline MyST website: build it and check it in a real (headless) Chromium.

Slow tests build a site with ``myst build --html`` and the local template in
``site/theme``: from two tiny executed notebooks made here (display and inline
maths, a matplotlib PNG, a pandas table, a cross-page link), and from the
repository's own ``_build/notebooks`` when the notebook chain has run. The
fixture checks that ``hide-input`` code and papermill's parameter cells are
folded (outputs visible) and that the runner's provenance header sits under
the title. The checker is also shown to fail on a broken equation, a missing
page, a missing figure and stderr output on a page. Browser tests skip only when chromium/chromedriver are absent
(install them with ``bash site/install_browser.sh``).
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from physeg.reproduce import site
from physeg.paths import REPO_ROOT

CHROMIUM = site.find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium + chromedriver not found (install: bash site/install_browser.sh)",
)

DISPLAY_EQ = r"S_\mathrm{MPRAGE} = \mathrm{PD}\,\left(1 - 2\,e^{-\mathrm{TI}/T_1}\right)"
INLINE_EQ = r"T_2^{*}"


def _png_figure() -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2), dpi=60)
    ax.plot([0, 1, 2, 3], [0, 1, 0.5, 2])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _notebook(markdown: str, outputs: list) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_markdown_cell(markdown))
    params = nbformat.v4.new_code_cell('profile = "smoke"', metadata={"tags": ["parameters"]}, execution_count=1)
    nb.cells.append(params)
    code = nbformat.v4.new_code_cell("show()", execution_count=2)
    code.outputs = outputs
    nb.cells.append(code)
    return nb


def write_fixture_notebooks(build_dir: Path, *, broken_equation: bool = False) -> list[Path]:
    """Two small executed notebooks under ``build_dir/notebooks`` (as papermill leaves them)."""
    import pandas as pd

    nb_dir = build_dir / "notebooks"
    nb_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"tissue": ["GM", "WM", "CSF"], "dice": [0.91, 0.93, 0.88]})
    overview = _notebook(
        "# Overview\n\n"
        f"The apparent relaxation time ${INLINE_EQ}$ enters the SPGR signal; MPRAGE reads\n\n"
        f"$$\n{DISPLAY_EQ}\n$$ (eq-mprage)\n\n"
        "Results are on [the next page](01_results.ipynb).\n\n"
        ":::{note}\nA tiny fixture notebook.\n:::\n",
        [
            nbformat.v4.new_output("stream", name="stdout", text="profile: smoke\n"),
            nbformat.v4.new_output(
                "execute_result",
                data={"text/plain": table.to_string(), "text/html": table.to_html()},
                execution_count=2,
            ),
        ],
    )
    results_md = "# Results\n\nThe signal of [](#eq-mprage) gives contrast. Dice is $2|A\\cap B|/(|A|+|B|)$:\n\n$$\n\\mathrm{Dice} = \\frac{2TP}{2TP+FP+FN}\n$$\n"
    if broken_equation:
        results_md += "\nA broken one:\n\n$$\n\\frac{1}{\n$$\n"
    results = _notebook(
        results_md,
        [
            nbformat.v4.new_output("display_data", data={"image/png": _png_figure(), "text/plain": "<Figure>"}),
            nbformat.v4.new_output(
                "display_data",
                data={"text/markdown": "Mean **Dice** $\\bar{D} = 0.91$", "text/plain": "<Markdown>"},
            ),
        ],
    )
    folded = nbformat.v4.new_code_cell("plot_it()  # FOLDED-SOURCE", metadata={"tags": ["hide-input"]}, execution_count=4)
    folded.outputs = [nbformat.v4.new_output("stream", name="stdout", text="VISIBLE-OUTPUT\n")]
    results.cells.append(folded)
    header = nbformat.v4.new_markdown_cell("**Produced by** profile `smoke` · seed 0", metadata={"tags": ["provenance"]})
    results.cells.insert(2, header)  # after the parameters cell, as the runner places it
    removed = nbformat.v4.new_code_cell("secret()", metadata={"tags": ["remove-cell"]}, execution_count=3)
    removed.outputs = [nbformat.v4.new_output("stream", name="stdout", text="REMOVED-CELL-OUTPUT\n")]
    results.cells.append(removed)
    paths = [nb_dir / "00_overview.ipynb", nb_dir / "01_results.ipynb"]
    nbformat.write(overview, paths[0])
    nbformat.write(results, paths[1])
    return paths


# --------------------------------------------------------------------------- fast


def test_build_site_without_notebooks_fails_clearly(tmp_path):
    with pytest.raises(RuntimeError, match="no executed notebooks"):
        site.build_site(build_dir=tmp_path)


def _write_static_site(root: Path, *, broken: bool) -> None:
    root.mkdir(parents=True)
    link, anchor = ("missing.html", "nowhere") if broken else ("second.html", "top")
    stderr = '<pre class="output-stream stderr">TqdmWarning: IProgress not found\n</pre>' if broken else ""
    (root / "index.html").write_text(
        f'<html><body><nav class="sidebar"><a href="index.html#{anchor}">i</a><a href="{link}">s</a></nav>'
        f'<h1 id="top">Index</h1><img src="files/a.png"><pre class="output-stream stdout">fine</pre>{stderr}</body></html>'
    )
    (root / "second.html").write_text('<html><body><a href="index.html#top">back</a><h1>Second</h1></body></html>')
    (root / "files").mkdir()
    (root / "files" / "a.png").write_bytes(base64.b64decode(_png_figure()))


def test_link_checker_static(tmp_path):
    """The HTTP crawl (no browser) accepts a good site and flags a dead link and an unreachable page."""
    good, bad = tmp_path / "good", tmp_path / "bad"
    _write_static_site(good, broken=False)
    _write_static_site(bad, broken=True)
    expected = ["index.html", "second.html"]
    assert site.check_site(good, expected_pages=expected, browser=False) == []
    problems = site.check_site(bad, expected_pages=expected, browser=False)
    assert any("missing.html" in p and "404" in p for p in problems), problems
    assert any("second.html is not reachable" in p for p in problems), problems
    assert any("#nowhere" in p and "no such anchor" in p for p in problems), problems
    assert any("index.html: stderr output on the page: TqdmWarning" in p for p in problems), problems


def test_stderr_outputs_are_found():
    page = '<pre class="output-stream stdout">ok</pre><pre class="output-stream stderr">a &lt;b&gt;\nc</pre>'
    assert site.stderr_outputs(page) == ["a <b>\nc"]
    assert site.stderr_outputs('<pre class="output-stream stdout">ok</pre>') == []


# --------------------------------------------------------------------------- slow: fixture site


@pytest.fixture(scope="module")
def fixture_site(tmp_path_factory) -> Path:
    build_dir = tmp_path_factory.mktemp("site-build")
    write_fixture_notebooks(build_dir)
    return site.build_site(build_dir=build_dir)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fixture_site_builds(fixture_site):
    manifest = json.loads((fixture_site / "site-manifest.json").read_text())
    files = [p["file"] for p in manifest["pages"]]
    assert files[0] == "index.html" and len(files) == 2
    assert [Path(p["source"]).name for p in manifest["pages"]] == ["00_overview.ipynb", "01_results.ipynb"]
    assert manifest["problems"] == []
    for name in files:
        page = (fixture_site / name).read_text()
        assert 'class="sidebar"' in page and "Overview" in page and "Results" in page  # nav lists all pages
        assert 'href="/' not in page and 'src="/' not in page  # only relative links
    index = (fixture_site / "index.html").read_text()
    assert 'class="katex"' in index and 'class="dataframe"' in index
    assert "Parameters (notebook defaults)" in index  # papermill's parameters cell is labelled
    results = (fixture_site / files[1]).read_text()
    assert '<div class="output-markdown">' in results and "<strong>Dice</strong>" in results
    assert results.count('class="katex"') >= 3  # inline + display in the text, one in the markdown output
    assert "REMOVED-CELL-OUTPUT" not in results  # remove-cell tag honoured
    # hide-input: the code is folded in <details>, its output is outside and visible
    folded = results.index("FOLDED-SOURCE")
    assert results.rfind("<details", 0, folded) > results.rfind("</details>", 0, folded)
    assert results.rfind("<summary>Show code</summary>", 0, folded) > results.rfind("</details>", 0, folded)
    assert results.index("</details>", folded) < results.index("VISIBLE-OUTPUT")
    assert "<summary>Parameters (notebook defaults)</summary>" in results  # parameter cells folded too
    # the provenance header is lifted under the title, before the body
    header = results.index('<aside class="provenance"')
    assert results.index('class="page-title"') < header < results.index("Dice is")
    assert "profile <code>smoke</code>" in results[header:results.index("</aside>")]
    assert 'href="index.html#eq-mprage"' in results and 'id="eq-mprage"' in index  # cross-page equation ref
    assert (fixture_site / "_static" / "katex" / "katex.min.css").is_file()


@pytest.mark.slow
@needs_chromium
@pytest.mark.timeout(900)
def test_fixture_site_in_chromium(fixture_site):
    problems = site.check_site(fixture_site, require_math=True, require_figure=True)
    assert problems == [], "\n".join(problems)


@pytest.mark.slow
@needs_chromium
@pytest.mark.timeout(900)
def test_checker_flags_missing_page_and_figure(fixture_site, tmp_path):
    broken = tmp_path / "html"
    shutil.copytree(fixture_site, broken)
    manifest = json.loads((broken / "site-manifest.json").read_text())
    second = manifest["pages"][1]["file"]
    (broken / second).unlink()
    for png in (broken / "files").glob("*.png"):
        png.unlink()
    problems = site.check_site(broken, expected_pages=["index.html", second])
    text = "\n".join(problems)
    assert f"{second}: HTTP 404" in text, text
    assert f"expected page {second} is not reachable" in text, text

    # the figure: put the page back, keep the image missing
    shutil.copy2(fixture_site / second, broken / second)
    problems = site.check_site(broken, require_figure=True)
    text = "\n".join(problems)
    assert "image did not load" in text, text
    assert "console error" in text, text
    assert "no loaded figure anywhere" in text, text


@pytest.mark.slow
@needs_chromium
@pytest.mark.timeout(900)
def test_checker_flags_missing_katex_stylesheet(fixture_site, tmp_path):
    broken = tmp_path / "html"
    shutil.copytree(fixture_site, broken)
    shutil.rmtree(broken / "_static" / "katex")
    text = "\n".join(site.check_site(broken))
    assert "katex.min.css' -> HTTP 404" in text, text
    assert "KaTeX stylesheet not applied" in text, text
    assert "console error" in text, text


# --------------------------------------------------------------------------- slow: broken equation


@pytest.fixture(scope="module")
def broken_equation_build(tmp_path_factory) -> Path:
    build_dir = tmp_path_factory.mktemp("site-broken")
    write_fixture_notebooks(build_dir, broken_equation=True)
    return build_dir


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_build_fails_on_broken_equation(broken_equation_build):
    with pytest.raises(RuntimeError, match="math-error"):
        site.build_site(build_dir=broken_equation_build)


@pytest.mark.slow
@needs_chromium
@pytest.mark.timeout(900)
def test_checker_flags_broken_equation(broken_equation_build):
    html = site.build_site(build_dir=broken_equation_build, strict=False)
    problems = site.check_site(html, require_math=True, require_figure=True)
    assert any("equation not typeset" in p and "frac" in p for p in problems), problems


# --------------------------------------------------------------------------- slow: the real site


# The executed notebook chain's own site is built and checked in tests/test_notebook_chain.py.
