r"""The one predictor: a trained network applied to whole volumes (paper §2.1, §2.4).

Training validation, the evaluation of notebooks 04–05 and ``physeg segment``
all go through :class:`Predictor`; nothing else runs a sliding window.

Sliding window
    The network is trained on patches of ``patch_size``³ voxels; a whole
    volume is covered by windows of that size overlapping by ``overlap``
    (a fraction of the window), blended with Gaussian weights (MONAI's
    :func:`~monai.inferers.sliding_window_inference`, ``mode="gaussian"``).
    ``sw_batch_size`` windows go through the network together.

Monte-Carlo samples (paper §2.4), :meth:`Predictor.sample`
    * **deterministic** models: one pass, ``n = 1``;
    * **aleatoric** models: ONE forward pass gives the logits :math:`f` and
      :math:`\sigma`; sample :math:`t` is :math:`\hat y_t = \arg\max_c (f_c + \sigma_c
      \varepsilon_{t,c})`, :math:`\varepsilon \sim N(0, 1)` drawn by
      :func:`physeg.models.sampling.logit_noise`, in voxel blocks that each
      take all :math:`n` samples (:mod:`physeg.inference.aleatoric`: cache-sized
      buffers, blocks on several threads, results independent of the threads);
    * **epistemic** models: :math:`n` passes with Monte-Carlo dropout
      (:func:`physeg.models.sampling.mc_dropout`), batched: ``copies``
      copies of the image go through the sliding window together (each copy
      and window draws its own dropout masks).

    From the same :math:`n` sample label maps come the per-sample tissue voxel
    counts (volumes), the per-voxel vote fractions and the majority-vote label
    map, and (``maps=True``) the mean class probabilities
    :math:`\bar p_c = \frac1n\sum_t \mathrm{softmax}(\hat x_t)_c`.

CPU layout
    Every network call runs inside :func:`physeg.models.layout.cpu_layout`
    (on CPU: instance norms as channels-last group norms, so the convolutions
    run channels-last; the same function up to float32 rounding).

Random numbers
    Aleatoric noise comes from ``generator`` (through per-block seeds drawn
    from it; a CPU generator gives the same numbers on any device). Dropout masks come from torch's default generator of the
    model's device; ``seed`` seeds it inside :func:`torch.random.fork_rng`, so
    the caller's random stream is left as it was.

Precision
    float32 unless ``amp=True`` (bf16 autocast on CUDA only; on CPU ``amp``
    changes nothing). Training validation asks for it on CUDA; evaluation and
    ``physeg segment`` do not, so their numbers never depend on it silently.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from physeg.inference.aleatoric import aleatoric_tallies
from physeg.models.layout import cpu_layout
from physeg.inference.samples import SampleTally, Samples, class_argmax, reduce_tallies  # noqa: F401  (re-exported)
from physeg.models.sampling import mc_dropout

#: Bytes of float32 work buffers per voxel and aleatoric sample that a chunk of samples may use in all.
CHUNK_BUDGET_BYTES: float = 2.5e8
#: Most aleatoric samples in one chunk.
MAX_ALEATORIC_CHUNK: int = 64
#: Bytes of one first-level float32 feature map over all windows of a network call on CPU. Calls
#: beyond a last-level-cache slice cost more per window (demo volume, 2 threads, 8 MC samples:
#: 12 windows per call 2.7 s, 24: 3.1 s, 48: 4.2 s, 96: 4.9 s), so CPU calls stay near this size.
CPU_CALL_BYTES: float = 16e6


def autocast_context(device: torch.device):
    """bf16 autocast on CUDA, nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for a in range(0, n, size):
        yield a, min(n, a + size)


def windows_per_image(shape: Sequence[int], patch: Sequence[int], overlap: float) -> int:
    """Sliding windows over an image: per axis ``ceil((S - r) / step) + 1`` with ``step = r (1 - overlap)``."""
    n = 1
    for size, roi in zip(shape, patch):
        step = max(1, int(roi * (1 - overlap)))
        n *= 1 if size <= roi else math.ceil((size - roi) / step) + 1
    return n


def aleatoric_chunk(voxels: int) -> int:
    """Aleatoric samples per chunk: ≤ :data:`CHUNK_BUDGET_BYTES` at 16 bytes per voxel and sample, ≤ 64."""
    return max(1, min(MAX_ALEATORIC_CHUNK, int(CHUNK_BUDGET_BYTES // (voxels * 4 * 4))))


@contextlib.contextmanager
def _eval_mode(net: torch.nn.Module) -> Iterator[None]:
    """Every module in eval mode; the previous flags come back on exit."""
    flags = {m: m.training for m in net.modules()}
    net.eval()
    try:
        yield
    finally:
        for m, f in flags.items():
            m.train(f)


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Default generators seeded with ``seed`` inside a fork of the caller's RNG state (``None``: as is)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class Predictor:
    """A trained network applied to whole volumes by sliding windows (module docstring).

    Parameters
    ----------
    model
        :class:`~physeg.models.network.PhysicsUNet` (or its DDP wrapper) on its device.
    patch_size
        Window edge(s) in voxels: the training patch size (``plans.patch_size``).
    overlap
        Window overlap, fraction of the window (``plans.sw_overlap``).
    sw_batch_size
        Windows per network call. Default on CPU: all windows of the image
        (or of the epistemic copies) up to :data:`CPU_CALL_BYTES`; on CUDA 8,
        and ``max(4, copies)`` for epistemic copies.
    copies
        Epistemic samples per batch. Default on CPU: as many images as
        :data:`CPU_CALL_BYTES` holds windows of (demo: 1, smoke: 9); on CUDA
        ≤ 64, memory-bounded.
    amp
        bf16 autocast on CUDA (see module docstring); off by default.
    """

    def __init__(self, model: torch.nn.Module, *, patch_size: int | Sequence[int], overlap: float,
                 sw_batch_size: int | None = None, copies: int | None = None, amp: bool = False) -> None:
        self.net = model.module if hasattr(model, "module") else model
        self.patch_size = (int(patch_size),) * 3 if isinstance(patch_size, int) else tuple(map(int, patch_size))
        self.overlap = float(overlap)
        self.sw_batch_size = sw_batch_size
        self.copies = copies
        self.amp = amp

    @classmethod
    def from_plans(cls, model: torch.nn.Module, plans, **kw) -> "Predictor":
        """Window and overlap of a model folder's :class:`~physeg.models.plans.Plans`."""
        return cls(model, patch_size=plans.patch_size, overlap=plans.sw_overlap, **kw)

    @classmethod
    def from_profile(cls, model: torch.nn.Module, profile, **kw) -> "Predictor":
        """Window and overlap of a :class:`~physeg.profiles.Profile` (``patch_size``, ``sw_overlap``)."""
        return cls(model, patch_size=profile.patch_size, overlap=profile.sw_overlap, **kw)

    # -- what the network is ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def uncertainty(self) -> str:
        """``"none"``, ``"epistemic"`` or ``"aleatoric"`` (the network's configuration)."""
        cfg = getattr(self.net, "config", None)
        return getattr(cfg, "uncertainty", "none")

    @property
    def uses_physics(self) -> bool:
        """Whether the network reads the acquisition parameters θ."""
        return bool(getattr(self.net, "uses_physics", True))

    # -- sliding window -----------------------------------------------------------------------
    def _params(self, params, batch: int) -> torch.Tensor | None:
        """θ as ``(batch, P)`` float32 on the device, or ``None`` for physics-free networks."""
        if not self.uses_physics or params is None:
            return None
        p = torch.as_tensor(params, dtype=torch.float32).to(self.device)
        p = p.reshape(1, -1) if p.ndim <= 1 else p
        return p.expand(batch, -1) if p.shape[0] == 1 else p

    def _sliding(self, x: torch.Tensor, params: torch.Tensor | None, *, sigma: bool,
                 sw_batch_size: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (and σ) ``(B, C, *S)`` of images ``x`` ``(B, 1, *S)`` sharing θ ``params`` ``(1, P)``."""
        device = self.device
        amp = autocast_context(device) if self.amp else contextlib.nullcontext()

        def window(w: torch.Tensor):
            p = None if params is None else params.expand(w.shape[0], -1)
            with amp, cpu_layout(self.net, device=device):
                out = self.net.heads(w, p)
            return (out["logits"].float(), out["sigma"].float()) if sigma else out["logits"].float()

        return sliding_window_inference(
            x.to(device, torch.float32), roi_size=self.patch_size, sw_batch_size=sw_batch_size,
            predictor=window, overlap=self.overlap, mode="gaussian",
        )

    @staticmethod
    def _batched(image: torch.Tensor) -> torch.Tensor:
        image = torch.as_tensor(image)
        return image.unsqueeze(0) if image.ndim == 4 else image

    @torch.no_grad()
    def logits(self, image: torch.Tensor, params=None, *, sigma: bool = False
               ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Deterministic whole-volume logits ``(B, C, *S)`` float32 on the model's device (and σ).

        ``image`` ``(1, *S)`` or ``(B, 1, *S)``; ``params`` θ ``(P,)`` or ``(B, P)``
        in seconds/radians (ignored by physics-free networks). The network runs
        in eval mode; its train/eval flags are restored afterwards.
        """
        x = self._batched(image)
        p = self._params(params, x.shape[0])
        out = []
        sw = self._windows_per_call(windows_per_image(x.shape[2:], self.patch_size, self.overlap))
        with _eval_mode(self.net):
            for b in range(x.shape[0]):
                pb = None if p is None else p[b:b + 1]
                out.append(self._sliding(x[b:b + 1], pb, sigma=sigma, sw_batch_size=sw))
        if sigma:
            return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])
        return torch.cat(out)

    def labels(self, image: torch.Tensor, params=None) -> torch.Tensor:
        """Deterministic label maps ``(B, *S)`` int64 on the CPU: argmax of :meth:`logits`."""
        return class_argmax(self.logits(image, params)).cpu()

    # -- Monte-Carlo samples ------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, image: torch.Tensor, params=None, *, n: int, generator: torch.Generator | None = None,
               seed: int | None = None, maps: bool = True) -> Samples:
        """``n`` Monte-Carlo samples of one image ``(1, *S)`` (or ``(1, 1, *S)``), reduced to :class:`Samples`.

        Deterministic networks give one sample whatever ``n``. ``generator``
        draws the aleatoric logit noise, ``seed`` the dropout masks (module
        docstring). ``maps=False`` keeps only the volume counts (no vote
        fractions, label map or probabilities: the evaluation's fast path).
        """
        if n < 1:
            raise ValueError(f"need at least one sample, got n={n}")
        x = self._batched(image)
        if x.shape[0] != 1:
            raise ValueError(f"sample() takes one image, got a batch of {x.shape[0]}")
        p = self._params(params, 1)
        kind = self.uncertainty
        if kind == "aleatoric":
            return self._aleatoric(x, p, n=n, generator=generator, maps=maps)
        if kind == "epistemic":
            return self._epistemic(x, p, n=n, seed=seed, maps=maps)
        logits = self.logits(x, p)
        tally = SampleTally(n_classes=logits.shape[1], voxels=logits[0, 0].numel(), device=logits.device, maps=maps)
        flat = logits.reshape(1, logits.shape[1], -1)
        tally.add(class_argmax(flat), torch.softmax(flat[0], 0) if maps else None)
        return tally.result("none", logits.shape[2:])

    def _aleatoric(self, x: torch.Tensor, params, *, n: int, generator: torch.Generator | None,
                   maps: bool) -> Samples:
        """One forward pass, ``n`` noisy logit maps ``f + σ ε`` in voxel blocks (:mod:`physeg.inference.aleatoric`)."""
        logits, sigma = self.logits(x, params, sigma=True)
        C = logits.shape[1]
        counts, votes, prob_sum = aleatoric_tallies(logits[0].reshape(C, -1), sigma[0].reshape(C, -1), n=n,
                                                    generator=generator, maps=maps)
        return reduce_tallies("aleatoric", counts, votes, prob_sum, logits.shape[2:])

    def _cpu_call_windows(self) -> int:
        """Windows whose first-level feature map (float32) fits :data:`CPU_CALL_BYTES` (at least 1)."""
        width = getattr(getattr(self.net, "config", None), "channels", (32,))[0]
        return max(1, int(CPU_CALL_BYTES // (int(np.prod(self.patch_size)) * width * 4)))

    def _epistemic_batching(self, n: int, shape: Sequence[int]) -> tuple[int, int]:
        """Copies of the image per sliding window and windows per network call (unless given).

        CPU: as many copies as :data:`CPU_CALL_BYTES` holds windows of
        (at least one), all their windows in one call. CUDA: copies bounded by
        memory (≤ 64, as the aleatoric chunks), ``max(4, copies)`` windows per call.
        """
        windows = windows_per_image(shape, self.patch_size, self.overlap)
        if self.device.type != "cpu":
            copies = self.copies or min(n, aleatoric_chunk(int(np.prod(shape))))
            return copies, self.sw_batch_size or max(4, copies)
        copies = self.copies or max(1, min(n, self._cpu_call_windows() // windows))
        return copies, self._windows_per_call(copies * windows)

    def _windows_per_call(self, windows: int) -> int:
        """``sw_batch_size`` if given; on CPU all ``windows`` up to :data:`CPU_CALL_BYTES`; on CUDA 8.

        The blended logits do not depend on it (tested); only the speed does.
        """
        if self.sw_batch_size:
            return self.sw_batch_size
        if self.device.type != "cpu":
            return 8
        return max(1, min(windows, self._cpu_call_windows()))

    def _epistemic(self, x: torch.Tensor, params, *, n: int, seed: int | None, maps: bool) -> Samples:
        """``n`` MC-dropout passes, ``copies`` copies of the image per sliding window (module docstring)."""
        V = x[0, 0].numel()
        copies, sw = self._epistemic_batching(n, x.shape[2:])
        tally = None
        with _seeded(seed, self.device), mc_dropout(self.net):
            for a, b in _chunks(n, copies):
                k = b - a
                logits = self._sliding(x.expand(k, *x.shape[1:]), params, sigma=False, sw_batch_size=sw)
                C = logits.shape[1]
                if tally is None:
                    tally = SampleTally(n_classes=C, voxels=V, device=logits.device, maps=maps)
                labels = class_argmax(logits).reshape(k, -1)
                prob_sum = torch.softmax(logits, 1).sum(0).reshape(C, -1) if maps else None
                tally.add(labels, prob_sum)
        return tally.result("epistemic", x.shape[2:])


@torch.no_grad()
def infer_volume(
    model: torch.nn.Module,
    image: torch.Tensor,
    physics: torch.Tensor | None = None,
    *,
    profile=None,
    roi_size: int | Sequence[int] | None = None,
    overlap: float | None = None,
    sw_batch_size: int | None = None,
    return_sigma: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Deterministic whole-volume logits: :meth:`Predictor.logits` in one call.

    ``roi_size``/``overlap`` default to the profile's ``patch_size``/``sw_overlap``
    (overlap 0.25 without a profile). Returns ``(B, C, *S)`` (and σ).
    """
    roi_size = profile.patch_size if roi_size is None else roi_size
    if overlap is None:
        overlap = profile.sw_overlap if profile is not None else 0.25
    predictor = Predictor(model, patch_size=roi_size, overlap=overlap, sw_batch_size=sw_batch_size)
    return predictor.logits(image, physics, sigma=return_sigma)
