r"""Aleatoric Monte-Carlo samples from one forward pass (paper §2.4), in voxel blocks.

Given the logits :math:`f` and :math:`\sigma` ``(C, V)`` of one whole volume,
sample :math:`t` of voxel :math:`i` is
:math:`\hat y_{t,i} = \arg\max_c (f_{c,i} + \sigma_{c,i}\,\varepsilon_{t,c,i})`,
:math:`\varepsilon \sim N(0, 1)` i.i.d., drawn by
:func:`physeg.models.sampling.logit_noise`. The noise is independent per
voxel, so the volume is cut into blocks of voxels, each block takes all
``n`` samples at once and owns its slice of the vote and probability maps:

* block :math:`j` draws its noise from its own CPU generator, seeded by
  the :math:`j`-th of ``blocks`` integers drawn from the caller's
  ``generator``: the result depends on the generator, ``n`` and the volume,
  never on how many threads ran the blocks;
* a block's work buffers (``n × block`` float32 per class, about
  :data:`BLOCK_ELEMENTS` elements) stay in the core's cache, where the
  whole-volume buffers of ``n × V`` did not (demo volume: 27 MB per class);
* on CPU the blocks run on ``torch.get_num_threads()`` threads: torch's
  normal generator is sequential, and the noise (:math:`nCV`, 27 M normals
  for 50 samples of the demo volume) is most of the cost.

The law of the samples is the one of :func:`physeg.models.sampling.sample_logits`
followed by an argmax (tested); only which normal lands where changes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from physeg.conventions import TISSUES
from physeg.models.sampling import logit_noise

#: Elements (samples × voxels) of one block's per-class buffer: 2¹⁷ float32 = 512 KiB.
BLOCK_ELEMENTS: int = 2 ** 17


def block_voxels(n: int) -> int:
    """Voxels per block for ``n`` samples: ``max(1, BLOCK_ELEMENTS // n)``."""
    return max(1, BLOCK_ELEMENTS // n)


def _block(f: torch.Tensor, sd: torch.Tensor, *, n: int, seed: int, maps: bool):
    """Samples of one voxel block: tissue counts ``(n, 3)`` int32, votes and summed probabilities ``(C, Vb)``."""
    C, vb = f.shape
    gen = torch.Generator().manual_seed(seed)
    z = torch.empty((C if maps else 1, n, vb), dtype=f.dtype, device=f.device)
    best = torch.empty((n, vb), dtype=f.dtype, device=f.device)
    idx = torch.zeros((n, vb), dtype=torch.uint8, device=f.device)
    for c in range(C):
        buf = z[c if maps else 0]
        logit_noise((n, vb), generator=gen, like=f, out=buf)
        torch.addcmul(f[c], sd[c], buf, out=buf)  # f_c + σ_c ε
        if c == 0:
            best.copy_(buf)
        else:
            idx.masked_fill_(buf > best, c)
            torch.maximum(best, buf, out=best)
    counts = torch.stack([(idx == t).sum(1, dtype=torch.int32) for t in TISSUES.values()], 1)
    if not maps:
        return counts, None, None
    votes = torch.stack([(idx == c).sum(0, dtype=torch.int32) for c in range(C)])
    e = z.sub_(best).exp_()  # softmax over classes, stabilised by the maximum
    prob_sum = e.div_(e.sum(0)).sum(1)
    return counts, votes, prob_sum


def aleatoric_tallies(f: torch.Tensor, sd: torch.Tensor, *, n: int, generator: torch.Generator | None,
                      maps: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``n`` aleatoric samples of logits ``f`` and σ ``sd`` ``(C, V)`` (module docstring).

    Returns the tissue voxel counts per sample ``(n, 3)`` int32 and, with
    ``maps``, the vote counts ``(C, V)`` int32 and the summed class
    probabilities ``(C, V)`` float32, all on ``f``'s device.
    """
    C, V = f.shape
    vb = block_voxels(n)
    starts = list(range(0, V, vb))
    gen_device = generator.device if generator is not None else torch.device("cpu")
    seeds = torch.randint(0, 2 ** 62, (len(starts),), generator=generator, device=gen_device).tolist()
    jobs = [(f[:, a:a + vb], sd[:, a:a + vb], s) for a, s in zip(starts, seeds)]

    def run(job):
        fb, sb, s = job
        return _block(fb, sb, n=n, seed=s, maps=maps)

    workers = min(torch.get_num_threads(), len(jobs)) if f.device.type == "cpu" else 1
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(run, jobs))
    else:
        results = [run(j) for j in jobs]
    counts = torch.stack([r[0] for r in results]).sum(0, dtype=torch.int32)
    if not maps:
        return counts, None, None
    return counts, torch.cat([r[1] for r in results], 1), torch.cat([r[2] for r in results], 1)
