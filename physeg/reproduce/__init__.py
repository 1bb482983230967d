"""Reproduction: execute the notebooks (papermill), record provenance, build and check the website.

- :mod:`physeg.reproduce.runner`      ``physeg paper``: notebooks -> executed copies (+ provenance header)
- :mod:`physeg.reproduce.provenance`  profile, seed, commit, device, versions, date of a run
- :mod:`physeg.reproduce.site`        ``python -m physeg.reproduce.site``: build and check the website
- :mod:`physeg.reproduce.site_build`  npm theme install, ``myst build --html``, staging
- :mod:`physeg.reproduce.site_check`  local server, link and stderr crawl, headless Chromium
"""
