"""Evaluation stage: metrics, statistics, calibration, claims and the paper's tables.

- :mod:`physeg.evaluation.metrics`       Dice, tissue volumes, coefficient of variation
- :mod:`physeg.evaluation.statistics`    paired Wilcoxon tests, effect sizes, bootstrap intervals
- :mod:`physeg.evaluation.calibration`   volume samples -> intervals, percentile recalibration (§2.4), located form
- :mod:`physeg.evaluation.interval_scores` coverage and width of the intervals per image and cell
- :mod:`physeg.evaluation.grid`          the fixed test grid of acquisition parameters (IoD, OoD, validation)
- :mod:`physeg.evaluation.models`        model folders of an evaluation: find, train, load; variants vs parents
- :mod:`physeg.evaluation.runs`          the test grid segmented by every model; uncertainty samples (cached)
- :mod:`physeg.evaluation.paper_tables`  Tables 1-2 of the paper beside ours
- :mod:`physeg.evaluation.claims`        the paper's claims, tested on our numbers
"""
