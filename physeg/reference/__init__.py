"""Committed reference results: frozen from a finished run, checked, shown beside the run that just executed.

- :mod:`physeg.reference.records`  checksums (``SHA256SUMS``), code versions, profile hash, machine record
- :mod:`physeg.reference.freeze`   ``physeg reference freeze``: a finished run's CSVs → ``results/<profile>/``
- :mod:`physeg.reference.status`   is ``results/<profile>/`` intact (checksums) and current (profile, code)?
- :mod:`physeg.reference.compare`  three column groups (this run, reference, paper) and the provenance banner

Shipped model weights are :mod:`physeg.inference.shipped`.
"""
