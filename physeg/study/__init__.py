"""Segment a study: BIDS in, BIDS derivatives out (issue 16).

One concept per module: :mod:`~physeg.study.discovery` (the scans of a BIDS
dataset), :mod:`~physeg.study.models` (the model per sequence and its
checksum), :mod:`~physeg.study.scan` (one scan in memory),
:mod:`~physeg.study.derivatives` (the derivatives layout, records, atomic
writes), :mod:`~physeg.study.qc` (the QC figure), :mod:`~physeg.study.table`
(``volumes.tsv``), :mod:`~physeg.study.report` (the HTML report),
:mod:`~physeg.study.protocol_card` (bias and CoV at a protocol),
:mod:`~physeg.study.consistency` (repeated scans: CoV, ICC, Bland–Altman) and
:mod:`~physeg.study.run` (participant and group levels).
"""

from physeg.study.run import StudyRun, segment_study

__all__ = ["StudyRun", "segment_study"]
