"""The study report in a real headless Chromium: no console errors, every scan shown, headers sort.

Skipped (with the reason) when chromium/chromedriver are absent, as the site's browser tests.
"""

from __future__ import annotations

import pandas as pd
import pytest

from physeg.reproduce import site
from physeg.study.report import write_report

CHROMIUM = site.find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium + chromedriver not found (install: bash site/install_browser.sh)")


def fake_table(n: int) -> pd.DataFrame:
    rows = []
    for i in range(n):
        row = {"scan": f"sub-{i:02d}/anat/sub-{i:02d}_T1w.nii.gz", "protocol": f"MPRAGE TI={600 + 100 * i} ms",
               "in_distribution": i != 1, "model": "Phys-Strat-Aug-Epistemic", "model_sha256": "ab" * 32,
               "p50_rel_width": 0.2 if i == 2 else 0.01,
               "flags": "OoD" if i == 1 else ("wide" if i == 2 else "")}
        for j, t in enumerate(("GM", "WM", "CSF")):
            v = 100.0 * (j + 1) + 7 * ((i * 5) % n)
            row.update({f"{t}_ml": v, f"{t}_p50_low_ml": v - 1, f"{t}_p50_high_ml": v + 1,
                        f"{t}_p95_low_ml": v - 3, f"{t}_p95_high_ml": v + 3})
        rows.append(row)
    return pd.DataFrame(rows)


def test_report_static_content(tmp_path):
    table = fake_table(4)
    path = write_report(tmp_path / "report.html", table=table, qc={},
                        failures=[{"scan": "sub-09/anat/sub-09_T1w.nii.gz", "error": "no <sidecar> & co"}])
    text = path.read_text()
    assert "no &lt;sidecar&gt; &amp; co" in text and "<script>" in text and "src=\"http" not in text
    assert text.index("sub-09") < text.index("sub-01/") < text.index("sub-02/") < text.index("sub-00/")


@needs_chromium
@pytest.mark.slow
def test_report_in_chromium(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from PIL import Image

    table = fake_table(5)
    qc = {}
    (tmp_path / "figs").mkdir()
    for scan in table["scan"]:
        name = f"figs/{scan.split('/')[-1]}.png"
        Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / name)
        qc[scan] = name
    path = write_report(tmp_path / "report.html", table=table, qc=qc,
                        failures=[{"scan": "sub-09/anat/sub-09_T1w.nii.gz", "error": "damaged gzip file"}])
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM[0]
    for flag in site.CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMIUM[1]), options=options)
    try:
        driver.get(path.as_uri())
        rows = driver.find_elements(By.CSS_SELECTOR, "#scans tbody tr")
        assert len(rows) == 6
        assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows[:3]] == ["failed", "OoD", "wide"]
        loaded = driver.execute_script("return Array.from(document.images).filter(i => i.naturalWidth > 0).length")
        assert loaded == 5
        header = driver.find_elements(By.CSS_SELECTOR, "#scans th")[4]  # GM ml
        header.click()
        cells = [r.find_elements(By.TAG_NAME, "td") for r in driver.find_elements(By.CSS_SELECTOR, "#scans tbody tr")]
        values = [float(c[4].get_attribute("data-sort")) for c in cells if len(c) > 4]  # the failed row spans
        assert values == sorted(values) and len(values) == 5
        severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()
