"""What is trained: the ablation registry, the physics-conditioned U-Net and its losses.

- :mod:`physeg.models.registry`  model name -> switches (paper §4, §4.1)
- :mod:`physeg.models.network`   the U-Net with the physics branch and uncertainty heads (§2.1, §2.4)
- :mod:`physeg.models.losses`    cross-entropy, stratification (§2.2) and aleatoric (§2.4) losses
"""
