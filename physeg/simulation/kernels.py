"""Element-wise kernels of the static equations on an ``(N, V)`` block (paper §2.3, eq. 1-2).

Used by :func:`physeg.simulation.layer.simulate`; see its module docstring for
the algebraic forms. The voxel axis is processed in cache-sized blocks; each
kernel writes its signals in place and, when given, applies the per-image
normalisation while the block is in cache.
"""

from __future__ import annotations

import math

import torch

from .equations import EPS_S, MPRAGE_TAU_S, MPRAGE_TD_S, apply_sign
from .normalisation import finish_block

#: Voxels per cache block on the CPU (64 Ki voxels x N realisations).
CPU_BLOCK_VOXELS: int = 1 << 16


def _block_ranges(v: int, block: int | None):
    if not block or block >= v:
        return [(0, v)]
    return [(s, min(v, s + block)) for s in range(0, v, block)]


#: Exponents are clamped at this value before ``exp``: :math:`e^{-80} \approx 1.8\times10^{-35}` is still a
#: normal float32, and very negative arguments (T1 = ε gives -TI/ε ≈ -10^6) hit a slow path of ``exp``.
#: Absolute error of the signal ≤ 2e-35 · PD.
MIN_EXPONENT: float = -80.0


def _rates(t: torch.Tensor) -> torch.Tensor:
    """Relaxation rate 1/T (1/s) of a cleaned time: NaN, -inf, T < ε → 1/ε; +inf → 0. New tensor."""
    return t.clamp_min(EPS_S).reciprocal_().nan_to_num_(nan=1.0 / EPS_S)


def _clean_pd_block(pd: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(pd, nan=0.0, posinf=0.0, neginf=0.0).clamp_min_(0.0)


def _mprage_kernel(
    maps: torch.Tensor, params: torch.Tensor, out: torch.Tensor, sign: str, block: int | None,
    scale: torch.Tensor | None = None, clip: tuple[float, float] | None = None, *, pd_clean: bool = False,
    b1: torch.Tensor | None = None, bias: torch.Tensor | None = None,
) -> None:
    """Write MPRAGE signals of ``params`` (N,1) into ``out`` (N, V), block by block.

    ``pd_clean=True``: PD is known to be finite and >= 0 (the support), its cleaning is skipped.
    ``b1``, ``bias``: ``(N, V)`` transmit field (inversion efficiency :math:`-\\cos\\pi B_1^+`) and receive
    bias (a factor), or ``None``.
    """
    if b1 is not None:
        return _mprage_b1_kernel(maps, params, out, sign, block, b1, bias, pd_clean=pd_clean)
    pd_all, t1_all = maps[0].reshape(-1), maps[1].reshape(-1)
    neg_ti = -params[:, :1]  # (N, 1)
    one = torch.ones((), dtype=out.dtype, device=out.device)
    for s, e in _block_ranges(out.shape[1], block):
        pd = pd_all[s:e].clone() if pd_clean else _clean_pd_block(pd_all[s:e])
        r1 = _rates(t1_all[s:e])
        e_delay = torch.mul(r1, -(MPRAGE_TD_S + MPRAGE_TAU_S)).clamp_min_(MIN_EXPONENT).exp_()
        o = out[:, s:e]
        torch.mul(r1, neg_ti, out=o)
        o.clamp_min_(MIN_EXPONENT).exp_()  # E = exp(-TI R1)
        d = torch.addcmul(one, o, e_delay)  # 1 + E exp(-(TD+tau) R1)
        o.div_(d).mul_(pd.mul_(-2.0)).sub_(pd, alpha=0.5)  # -2PD E/d + PD  (pd now holds -2PD)
        if bias is not None:
            o.mul_(bias[:, s:e])
        apply_sign(o, sign)
        finish_block(o, scale, clip)


def _mprage_b1_kernel(maps, params, out, sign, block, b1, bias, *, pd_clean=False) -> None:
    """MPRAGE with inversion efficiency :math:`\\delta = -\\cos(\\pi B_1^+)`: :math:`PD - PD(1+\\delta)E/(1+\\delta E e^{-(T_D+\\tau)R_1})`."""
    pd_all, t1_all = maps[0].reshape(-1), maps[1].reshape(-1)
    neg_ti = -params[:, :1]
    for s, e in _block_ranges(out.shape[1], block):
        pd = pd_all[s:e] if pd_clean else _clean_pd_block(pd_all[s:e])
        r1 = _rates(t1_all[s:e])
        e_delay = torch.mul(r1, -(MPRAGE_TD_S + MPRAGE_TAU_S)).clamp_min_(MIN_EXPONENT).exp_()
        delta = torch.mul(b1[:, s:e], math.pi).cos_().neg_()  # (N, b)
        o = out[:, s:e]
        torch.mul(r1, neg_ti, out=o)
        o.clamp_min_(MIN_EXPONENT).exp_()  # E
        d = torch.mul(o, e_delay).mul_(delta).add_(1.0)  # 1 + delta E e_delay
        o.mul_(delta.add_(1.0)).div_(d).mul_(pd).neg_().add_(pd)
        if bias is not None:
            o.mul_(bias[:, s:e])
        apply_sign(o, sign)


def _spgr_kernel(
    maps: torch.Tensor, params: torch.Tensor, out: torch.Tensor, block: int | None,
    scale: torch.Tensor | None = None, clip: tuple[float, float] | None = None, *, pd_clean: bool = False,
    b1: torch.Tensor | None = None, bias: torch.Tensor | None = None,
) -> None:
    """Write SPGR signals of ``params`` (N,3) into ``out`` (N, V), block by block (``pd_clean``, ``b1``,
    ``bias`` as for MPRAGE; B1+ scales the flip angle)."""
    if b1 is not None:
        return _spgr_b1_kernel(maps, params, out, block, b1, bias, pd_clean=pd_clean)
    pd_all, t1_all, t2_all = (maps[i].reshape(-1) for i in range(3))
    neg_tr, neg_te, fa = -params[:, 0:1], -params[:, 1:2], params[:, 2:3]
    cos_a = torch.cos(fa)
    neg_cos = -cos_a
    one_minus_cos = 1.0 - cos_a
    neg_sin = -torch.sin(fa)
    tiny = torch.finfo(out.dtype).tiny
    for s, e in _block_ranges(out.shape[1], block):
        log_pd = pd_all[s:e].log() if pd_clean else _clean_pd_block(pd_all[s:e]).log_()  # -inf where PD = 0 -> 0
        r1 = _rates(t1_all[s:e])
        r2 = _rates(t2_all[s:e])
        o = out[:, s:e]
        torch.mul(r1, neg_tr, out=o)
        o.clamp_min_(MIN_EXPONENT).expm1_()  # E1 - 1
        d = torch.addcmul(one_minus_cos, o, neg_cos).clamp_min_(tiny)  # 1 - cos(a) E1
        f = torch.mul(r2, neg_te).clamp_min_(MIN_EXPONENT).add_(log_pd).exp_()  # PD E2
        o.mul_(f).div_(d).mul_(neg_sin)
        if bias is not None:
            o.mul_(bias[:, s:e])
        finish_block(o, scale, clip)


def _spgr_b1_kernel(maps, params, out, block, b1, bias, *, pd_clean=False) -> None:
    """SPGR at the flip angle :math:`B_1^+\\alpha` per voxel: :math:`-\\sin\\alpha'(E_1-1)PD E_2/((1-\\cos\\alpha') - \\cos\\alpha'(E_1-1))`."""
    pd_all, t1_all, t2_all = (maps[i].reshape(-1) for i in range(3))
    neg_tr, neg_te, fa = -params[:, 0:1], -params[:, 1:2], params[:, 2:3]
    tiny = torch.finfo(out.dtype).tiny
    for s, e in _block_ranges(out.shape[1], block):
        log_pd = pd_all[s:e].log() if pd_clean else _clean_pd_block(pd_all[s:e]).log_()
        r1 = _rates(t1_all[s:e])
        r2 = _rates(t2_all[s:e])
        a = torch.mul(b1[:, s:e], fa)  # (N, b) flip angle per voxel
        cos_a = torch.cos(a)
        o = out[:, s:e]
        torch.mul(r1, neg_tr, out=o)
        o.clamp_min_(MIN_EXPONENT).expm1_()  # E1 - 1
        d = torch.mul(cos_a, o).neg_().sub_(cos_a).add_(1.0).clamp_min_(tiny)  # 1 - cos(a) E1
        f = torch.mul(r2, neg_te).clamp_min_(MIN_EXPONENT).add_(log_pd).exp_()  # PD E2
        o.mul_(f).div_(d).mul_(a.sin_()).neg_()
        if bias is not None:
            o.mul_(bias[:, s:e])
