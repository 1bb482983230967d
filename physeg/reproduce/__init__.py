"""Reproduction: execute the notebooks (papermill), record provenance, build and check the website.

- :mod:`physeg.reproduce.runner`      ``physeg paper``: notebooks -> executed copies
- :mod:`physeg.reproduce.provenance`  commit, device, versions, date of a run
- :mod:`physeg.reproduce.site`        the offline MyST website and its Chromium check
"""
