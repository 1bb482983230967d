"""Inference stage: a trained model folder applied to images.

- :mod:`physeg.inference.predictor`  the one predictor (sliding window, Monte-Carlo samples) used by training
  validation, evaluation and ``physeg segment``
- :mod:`physeg.inference.segment`  ``physeg segment``: NIfTI in, labels, probabilities and volume intervals out
- :mod:`physeg.inference.model_folder`  a model folder's plans, calibration, network and device
- :mod:`physeg.inference.calibration_io`  volume-interval calibrations as JSON files
"""
