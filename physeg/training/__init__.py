"""Training stage (paper §2.1-§2.3, §4): simulated realisations in, trained model folders out.

- :mod:`physeg.training.batches`      pre-generated / on-the-fly realisations through the simulation layer
                                      (§2.3), mixed / stratified batches (§2.2)
- :mod:`physeg.training.validation`   the early-stopping score: mean Dice minus mean CoV on fixed IoD
                                      realisations of the validation subjects (§2.1)
- :mod:`physeg.training.loop`         one model: optimiser steps, validation, early stopping, resume
- :mod:`physeg.training.identity`     what a model is: network, training settings, ``plans.json`` (folder hash)
- :mod:`physeg.training.checkpoint`   the files of a model folder; loading a trained model back
- :mod:`physeg.training.rng`          seeding and checkpointable RNG states (exact resume)
- :mod:`physeg.training.distributed`  devices and DDP (``torchrun``)
- :mod:`physeg.training.orchestrate`  every model a profile asks for, cached by the hash of its plans
"""
