"""physeg: acquisition-invariant brain MRI segmentation with informative uncertainties.

A literate, reproducible implementation of Borges et al. 2021. The library is
organised one concept per module:

- :mod:`physeg.profiles`   compute profiles (smoke, demo, paper) in one place
- :mod:`physeg.paths`      where caches, results and the built site live
- :mod:`physeg.simulation` MPRAGE / SPGR static equations and the simulation layer
- :mod:`physeg.data`       synthetic MPM cohort, BIDS qMRI loader, manifest
- :mod:`physeg.pgs`        physics gold standard (Gaussian mixture on the maps)
- :mod:`physeg.reproduce.runner`      papermill runner that executes the notebooks
- :mod:`physeg.cli`        the ``physeg`` command line
"""

__version__ = "0.1.0"
