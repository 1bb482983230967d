"""The physics-informed 3D U-Net of Borges et al. 2021 (paper §2.1, §2.4).

Architecture
------------
An nnU-Net-style encoder/decoder built from MONAI blocks
(:class:`~monai.networks.blocks.UnetBasicBlock`: two 3×3×3 convolutions, each
followed by instance norm and leaky ReLU; :class:`~monai.networks.blocks.UnetUpBlock`:
2×2×2 transposed convolution, skip concatenation, basic block;
:class:`~monai.networks.blocks.UnetOutBlock`: 1×1×1 convolution). With
``channels = (c_0, …, c_{L-1})``::

    image ─▶ [input dropout] ─▶ enc_0 (c_0, stride 1) ──────────────────────skip──┐
                                  │ ⊕ physics (EARLY: before the first down-sampling)│
                                  ▼                                                  │
                                enc_1 (c_1, stride 2) … enc_{L-1} (bottleneck)      │
                                  ▼                                                  │
                                up_{L-2} … up_0 (last up-sampling block, c_0) ◀────┘
                                  │ ⊕ physics (LATE: output of the ante-penultimate layer)
                                  ▼
                                penultimate block (c_0)  ─▶ features (stratification loss)
                                  ▼
                                out (1×1×1 conv) ─▶ logits (background, GM, WM, CSF)

*Physics branch*: the network receives the acquisition parameters θ themselves
(seconds and radians: MPRAGE ``[TI]``, SPGR ``[TR, TE, FA]``) and computes the
features ``φ(θ)`` inside its physics branch
(:func:`physeg.simulation.physics_features`: ``[θ, exp(-θ)]`` and ``sin FA``),
so no caller has to know the feature map. ``Linear(F, 40) → SELU →
Linear(40, 40) → SELU`` (→ dropout in the epistemic model) maps ``φ(θ)`` to a
40-vector, tiled over space and concatenated as 40 extra channels

* ``"early"``: to the output of the input block ``enc_0``, so the first
  stride-2 convolution (the first down-sampling) sees it (new in 2021);
* ``"late"``: to the output of the last up-sampling block (the
  ante-penultimate layer), which feeds the penultimate 3×3×3 block (Borges 2019).

``physics="early+late"`` is the paper's model, ``"late"`` the 2019 model (an
ablation the paper never ran), ``"none"`` the physics-agnostic baseline. The
skip connection from ``enc_0`` carries the image features without the physics
channels (they reach the decoder through the late injection).

Uncertainty variants (paper §2.4)
---------------------------------
``uncertainty="epistemic"``: dropout ``p = NetworkConfig.dropout`` (the
paper's 0.5; set from the profile's ``epistemic_dropout``) after every
convolution of every block (MONAI's block ``dropout``), in the physics branch,
and ``p = 0.05`` on the input image; :func:`mc_dropout` keeps only the dropout
modules stochastic at test time (:func:`physeg.models.sampling.mc_dropout`). The 1×1×1 output convolution has no dropout
(it would drop logits, not features).

``uncertainty="aleatoric"``: a σ branch (basic block → 1×1×1 conv → Softplus)
off the same tensor the penultimate block reads (the last up-sampling block's
output, with the late physics channels), giving ``σ_{i,c} > 0`` per voxel ``i``
and class ``c``; noisy logits ``x̂ = f + σ ⊙ ε``, ``ε ~ N(0, 1)``
(:func:`physeg.models.sampling.sample_logits`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from monai.networks.blocks import UnetBasicBlock, UnetOutBlock, UnetUpBlock
from torch import nn

from physeg.simulation import n_physics_features, physics_features

PHYSICS_MODES: tuple[str, ...] = ("none", "early+late", "late")
UNCERTAINTY_MODES: tuple[str, ...] = ("none", "epistemic", "aleatoric")

#: Width of the physics branch (the paper's two fully connected layers).
PHYSICS_WIDTH = 40


@dataclass(frozen=True)
class NetworkConfig:
    """Everything that defines a :class:`PhysicsUNet` (stored in ``plans.json``)."""

    channels: tuple[int, ...] = (30, 60, 120, 240, 480)
    in_channels: int = 1
    out_channels: int = 4
    physics: str = "none"
    #: Sequence whose parameters θ the physics branch reads (``None`` without physics).
    sequence: str | None = None
    physics_width: int = PHYSICS_WIDTH
    uncertainty: str = "none"
    dropout: float = 0.5
    input_dropout: float = 0.05
    norm: str = "instance"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkConfig":
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown network settings {sorted(unknown)}")
        return cls(**d)

    @property
    def n_physics_features(self) -> int:
        """Length of φ(θ) for :attr:`sequence` (0 without physics)."""
        return n_physics_features(self.sequence) if self.physics != "none" else 0


class PhysicsBranch(nn.Module):
    r"""φ(θ) and two fully connected layers on it (paper §2.1).

    .. math:: h = \mathrm{SELU}(W_2\,\mathrm{SELU}(W_1 \varphi(\theta) + b_1) + b_2) \in \mathbb{R}^{40}

    ``θ`` (B, P) in seconds/radians for ``sequence``; ``φ`` is
    :func:`physeg.simulation.physics_features`.
    """

    def __init__(self, *, sequence: str, width: int = PHYSICS_WIDTH, dropout: float | None = None) -> None:
        super().__init__()
        self.sequence = sequence
        n_features = n_physics_features(sequence)
        layers: list[nn.Module] = [nn.Linear(n_features, width), nn.SELU(), nn.Linear(width, width), nn.SELU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        self.mlp = nn.Sequential(*layers)

    def forward(self, params: torch.Tensor) -> torch.Tensor:
        return self.mlp(physics_features(self.sequence, params.float()))


def tile_concat(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Concatenate ``h`` (B, K), tiled over the spatial dims of ``x`` (B, C, *S), as K channels."""
    tiled = h.reshape(*h.shape, *([1] * (x.ndim - 2))).expand(-1, -1, *x.shape[2:])
    return torch.cat([x, tiled.to(x.dtype)], dim=1)


def tiled_conv(h: torch.Tensor, weight: torch.Tensor, *, spatial: tuple[int, ...], stride: int,
               padding: int) -> torch.Tensor:
    r"""Convolution of the tiled physics vector, computed without materialising the tiles.

    With :math:`h_b \in \mathbb{R}^K` tiled over space and zero-padded,
    :math:`\mathrm{conv}(\mathrm{tile}(h_b))_o(x) = \sum_k V_{b,o,k}\,\mathbb{1}[x + k \in \Omega]`,
    :math:`V_{b,o,k} = \sum_c W_{o,c,k} h_{b,c}`: a one-channel convolution of a
    map of ones with a per-sample kernel (grouped over the batch). Exactly the
    K-channel convolution of the concatenated tiles, at ~1/K of its cost.
    """
    b = h.shape[0]
    o = weight.shape[0]
    kernel = torch.einsum("oc...,bc->bo...", weight, h.to(weight.dtype)).reshape(b * o, 1, *weight.shape[2:])
    ones = torch.ones((1, 1, *spatial), dtype=weight.dtype, device=weight.device)
    out = F.conv3d(ones, kernel, stride=stride, padding=padding)
    return out.reshape(b, o, *out.shape[2:])


class PhysicsBasicBlock(UnetBasicBlock):
    """:class:`~monai.networks.blocks.UnetBasicBlock` whose first convolution also reads
    ``physics_channels`` tiled physics channels (concatenated after the image features).

    The first convolution's weight is split into the image part (``conv1.conv``)
    and the physics part (``physics_weight``), initialised together as one
    convolution over ``in_channels + physics_channels`` inputs; the physics
    part is applied by :func:`tiled_conv`, so the block equals
    ``UnetBasicBlock(in + K, out)`` applied to ``tile_concat(x, h)`` (tested).
    """

    def __init__(self, *, in_channels: int, physics_channels: int, out_channels: int, stride: int,
                 **kw) -> None:
        super().__init__(in_channels=in_channels, out_channels=out_channels, stride=stride, **kw)
        conv = self.conv1.conv
        full = nn.Conv3d(in_channels + physics_channels, out_channels, conv.kernel_size, bias=False)
        with torch.no_grad():
            conv.weight.copy_(full.weight[:, :in_channels])
        self.physics_weight = nn.Parameter(full.weight[:, in_channels:].detach().clone())
        self.physics_channels = physics_channels

    @property
    def total_in_channels(self) -> int:
        return self.conv1.conv.in_channels + self.physics_channels

    def forward(self, inp: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        conv = self.conv1.conv
        out = conv(inp)
        if h is not None:
            out = out + tiled_conv(h, self.physics_weight, spatial=tuple(inp.shape[2:]),
                                   stride=conv.stride[0], padding=conv.padding[0]).to(out.dtype)
        for name, mod in self.conv1.named_children():
            if name != "conv":
                out = mod(out)  # ADN (dropout) of the first convolution
        out = self.lrelu(self.norm1(out))
        return self.lrelu(self.norm2(self.conv2(out)))


class PhysicsUNet(nn.Module):
    """3D U-Net with optional physics injection and uncertainty heads (see module docstring).

    Parameters
    ----------
    config
        :class:`NetworkConfig`; ``physics != "none"`` needs the ``sequence`` whose θ it reads.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        if config.physics not in PHYSICS_MODES:
            raise ValueError(f"physics must be one of {PHYSICS_MODES}, got {config.physics!r}")
        if config.uncertainty not in UNCERTAINTY_MODES:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTY_MODES}, got {config.uncertainty!r}")
        if config.physics != "none" and config.sequence is None:
            raise ValueError("a physics model needs the sequence whose parameters it reads")
        if len(config.channels) < 2:
            raise ValueError("need at least two levels")
        self.config = config
        ch = tuple(config.channels)
        epistemic = config.uncertainty == "epistemic"
        p = config.dropout if epistemic else None
        kw = dict(spatial_dims=3, kernel_size=3, norm_name=config.norm, dropout=p)

        self.early = config.physics == "early+late"
        self.late = config.physics in ("early+late", "late")
        w = config.physics_width
        self.physics_branch = (
            PhysicsBranch(sequence=config.sequence, width=w, dropout=p)
            if config.physics != "none" else None
        )
        self.input_dropout = nn.Dropout(config.input_dropout) if epistemic and config.input_dropout else nn.Identity()

        enc: list[nn.Module] = [UnetBasicBlock(in_channels=config.in_channels, out_channels=ch[0], stride=1, **kw)]
        for k in range(1, len(ch)):
            if k == 1 and self.early:
                enc.append(PhysicsBasicBlock(in_channels=ch[0], physics_channels=w, out_channels=ch[1], stride=2,
                                             **kw))
            else:
                enc.append(UnetBasicBlock(in_channels=ch[k - 1], out_channels=ch[k], stride=2, **kw))
        self.encoder = nn.ModuleList(enc)
        # decoder[j] up-samples level L-1-j to level L-2-j; the last one is the last up-sampling block
        self.decoder = nn.ModuleList(
            UnetUpBlock(in_channels=ch[k + 1], out_channels=ch[k], stride=1, upsample_kernel_size=2, **kw)
            for k in reversed(range(len(ch) - 1))
        )
        late_w = w if self.late else 0
        self.penultimate = PhysicsBasicBlock(in_channels=ch[0], physics_channels=late_w, out_channels=ch[0],
                                             stride=1, **kw)
        self.out = UnetOutBlock(spatial_dims=3, in_channels=ch[0], out_channels=config.out_channels)
        if config.uncertainty == "aleatoric":
            self.sigma_block = PhysicsBasicBlock(in_channels=ch[0], physics_channels=late_w, out_channels=ch[0],
                                                 stride=1, **kw)
            self.sigma_out = nn.Sequential(
                UnetOutBlock(spatial_dims=3, in_channels=ch[0], out_channels=config.out_channels), nn.Softplus()
            )
        else:
            self.sigma_block = self.sigma_out = None

    def set_output_prior(self, frequencies: torch.Tensor) -> None:
        r"""Output convolution bias :math:`b_c = \log f_c` (``frequencies`` ``(C,)``, background included).

        An untrained network's logits are small around :math:`b`, so its soft-max
        starts at the class prior :math:`f` instead of uniform (as Lin et al.
        2017 initialise the classifier of their focal-loss detector).
        """
        bias = self.out.conv.conv.bias
        with torch.no_grad():
            bias.copy_(frequencies.to(bias).clamp_min(1e-4).log())

    @property
    def divisor(self) -> int:
        """Spatial sizes must be multiples of this (2 per down-sampling)."""
        return 2 ** (len(self.config.channels) - 1)

    @property
    def uses_physics(self) -> bool:
        """Whether :meth:`heads` needs the acquisition parameters θ."""
        return self.physics_branch is not None

    def _physics(self, x: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor | None:
        if self.physics_branch is None:
            return None
        if params is None:
            raise ValueError("this model needs the acquisition parameters `params` (B, P), seconds/radians")
        params = torch.as_tensor(params).to(device=x.device, dtype=torch.float32)
        if params.ndim == 1:
            params = params.unsqueeze(0)
        if params.shape[0] == 1 and x.shape[0] > 1:
            params = params.expand(x.shape[0], -1)
        return self.physics_branch(params)

    def heads(self, x: torch.Tensor, params: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """All outputs of one forward pass.

        ``x`` (B, 1, *S) images; ``params`` (B, P) or (P,) acquisition
        parameters θ in seconds/radians (ignored by physics-free models).

        Returns
        -------
        dict
            ``logits`` (B, C, *S); ``features`` (B, c_0, *S), the penultimate
            block's output; ``sigma`` (B, C, *S) for aleatoric models.
        """
        h = self._physics(x, params)
        y = self.encoder[0](self.input_dropout(x))
        skips = [y]
        for k, block in enumerate(self.encoder[1:], start=1):
            # early injection: enc_1 (the first down-sampling) reads [y, tile(h)]
            y = block(y, h) if (k == 1 and self.early) else block(y)
            skips.append(y)
        y = skips.pop()  # bottleneck
        for up in self.decoder:
            y = up(y, skips.pop())
        # late injection: the penultimate block reads [y, tile(h)], y = last up-sampling block's output
        h_late = h if self.late else None
        features = self.penultimate(y, h_late)
        out = {"logits": self.out(features), "features": features}
        if self.sigma_block is not None:
            out["sigma"] = self.sigma_out(self.sigma_block(y, h_late))
        return out

    def forward(
        self, x: torch.Tensor, params: torch.Tensor | None = None, return_features: bool | str = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | dict[str, torch.Tensor]:
        """Logits (B, C, *S); ``(logits, penultimate features)`` if ``return_features``;
        the :meth:`heads` dictionary if ``return_features == "all"`` (used through DDP,
        which only hooks ``forward``)."""
        out = self.heads(x, params)
        if return_features == "all":
            return out
        return (out["logits"], out["features"]) if return_features else out["logits"]


def build_network(config: NetworkConfig | dict) -> PhysicsUNet:
    """:class:`PhysicsUNet` from a config object or its dictionary."""
    if isinstance(config, dict):
        config = NetworkConfig.from_dict(config)
    return PhysicsUNet(config)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def describe(model: PhysicsUNet) -> str:
    """Text summary: one line per block with its input/output channels, injection points marked."""
    cfg = model.config
    ch = cfg.channels
    w = cfg.physics_width
    lines = [f"PhysicsUNet physics={cfg.physics!r} uncertainty={cfg.uncertainty!r} "
             f"params={count_parameters(model):,}"]
    if model.physics_branch is not None:
        lines.append(f"  physics branch: Linear({cfg.n_physics_features},{w})-SELU-Linear({w},{w})-SELU"
                     + ("-Dropout" if cfg.uncertainty == "epistemic" else ""))
    lines.append(f"  enc_0: conv {cfg.in_channels}->{ch[0]} (stride 1)")
    if model.early:
        lines.append(f"    <== EARLY physics: +{w} tiled channels (before first down-sampling)")
    for k in range(1, len(ch)):
        c_in = ch[k - 1] + (w if (k == 1 and model.early) else 0)
        lines.append(f"  enc_{k}: conv {c_in}->{ch[k]} (stride 2)" + (" [bottleneck]" if k == len(ch) - 1 else ""))
    for k in reversed(range(len(ch) - 1)):
        lines.append(f"  up_{k}: transp-conv {ch[k + 1]}->{ch[k]}, +skip enc_{k}, conv {2 * ch[k]}->{ch[k]}"
                     + ("  [last up-sampling block = ante-penultimate layer]" if k == 0 else ""))
    if model.late:
        lines.append(f"    <== LATE physics: +{w} tiled channels")
    c_late = ch[0] + (w if model.late else 0)
    lines.append(f"  penultimate: conv {c_late}->{ch[0]}  -> features (stratification loss)")
    lines.append(f"  out: 1x1x1 conv {ch[0]}->{cfg.out_channels} -> logits")
    if model.sigma_block is not None:
        lines.append(f"  sigma head (off the up_0 output): conv {c_late}->{ch[0]}, 1x1x1 ->{cfg.out_channels}, Softplus")
    return "\n".join(lines)
