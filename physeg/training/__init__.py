"""Training stage: batches of simulated realisations, the loop, and training every model of a profile.

- :mod:`physeg.training.batches`      pre-generated / on-the-fly realisations, mixed / stratified batches (§2.2, §2.3)
- :mod:`physeg.training.loop`         one model: optimiser, validation, early stopping, checkpoints, resume, DDP
- :mod:`physeg.training.orchestrate`  every model a profile asks for, cached by the hash of its configuration
"""
