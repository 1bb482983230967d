"""Inference stage: a trained model folder applied to images.

- :mod:`physeg.inference.segment`  ``physeg segment``: NIfTI in, labels, probabilities and volume intervals out
"""
