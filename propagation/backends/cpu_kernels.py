"""Numba twins of the CUDA kernels (kernels/propagation.cu): the CPU backend's passes (ALGORITHM.md).

Every function here has the name and the argument list of one CUDA kernel, so the synthesis backend
(:mod:`.backend`) launches the same sequence on the numba runtime and on the CUDA runtimes, and
:mod:`.passes` maps each pass of ALGORITHM.md to both. Arrays arrive as the runtime allocated them
(``nnf [H,W,2]``, masks ``[H,W]``, images ``[H,W,C]`` read as flat buffers); the ``h, w`` arguments repeat
what the shapes say, as the CUDA kernels need them.

Why numba and not vectorised torch: the work is ~10⁸ small patch comparisons per frame with per-candidate
early termination (most candidates are rejected after one or two of the five patch rows), per-pixel
branching (frozen pixels, duplicate candidates, clipped windows) and data-dependent gathers; vectorised
code has to evaluate every candidate in full and materialise the gathered patches (measured with
``python benchmarks/propagation.py --torch-prototype``, figures in the README). numba compiles the per-pixel
loops to native code with LLVM at first use (no compiler at install time; ``cache=True`` keeps the machine
code beside this file).

Each kernel is a per-pixel function looped with ``prange`` over rows, reading one buffer and writing another
(or only its own pixel), so the result does not depend on the number of threads. Arithmetic is integer
except the weighted vote (float32, fixed order, no FMA: ``fastmath=False`` and LLVM does not contract
without it). Index arithmetic in the hot loop uses unsigned integers so numba emits no negative-index
wraparound and LLVM vectorises the int32 SSD. Where a numba twin computes a pass differently from its CUDA
kernel (running box sums, a serial count) the integers it produces are the same (ALGORITHM.md §10).

This module imports nothing from the pack. :mod:`.passes` loads it under the fixed module name
``rerender_video_cpu_kernels`` whatever name the pack itself was imported under (``rerender_video`` in the
tests and the CLI, ``custom_nodes.<folder>`` in ComfyUI): numba's on-disk cache (``cache=True``) stores
calls between kernels by module name, so a cache written under one import name would break the other.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


M32 = 0xFFFFFFFF
#: Sentinel "infinite" cost for an error evaluation without early termination.
NO_BOUND = np.int64(1) << np.int64(62)

_JIT = dict(cache=True, fastmath=False, nogil=True)
_PJIT = dict(cache=True, fastmath=False, nogil=True, parallel=True)


# ---------------------------------------------------------------------------------------------------- helpers
@njit(inline="always", **_JIT)
def pcg_hash(value):
    """PCG-style 32-bit integer hash (ALGORITHM.md §6.4); ``value`` in ``[0, 2^32)``, int64 arithmetic."""
    state = (value * 747796405 + 2891336453) & M32
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & M32
    return ((word >> 22) ^ word) & M32


@njit(inline="always", **_JIT)
def _ssd(tbuf, toff, tstride, src, soff, sstride, rowlen, p, occ, best):
    """Patch SSD in int32, rows in order; stops after a row once ``acc + occ >= best`` (§4)."""
    acc = np.int32(0)
    for dy in range(p):
        tb = np.uint64(toff + dy * tstride)
        sb = np.uint64(soff + dy * sstride)
        for j in range(rowlen):
            uj = np.uint64(j)
            d = np.int32(np.int32(tbuf[tb + uj]) - np.int32(src[sb + uj]))
            acc = np.int32(acc + np.int32(d * d))
        if np.int64(acc) + occ >= best:
            return acc
    return acc


@njit(inline="always", **_JIT)
def _gather_target_patch(tgt, ht, wt, c, p, x, y, out):
    """Copy the p×p target patch at (x, y) with clamped coordinates into ``out`` (rows of p·c values)."""
    r = p // 2
    k = 0
    for dy in range(-r, r + 1):
        yy = min(max(y + dy, 0), ht - 1)
        for dx in range(-r, r + 1):
            xx = min(max(x + dx, 0), wt - 1)
            base = (yy * wt + xx) * c
            for ch in range(c):
                out[k] = tgt[base + ch]
                k += 1


# ---------------------------------------------------------------------------------------------------- NNF init
@njit(**_PJIT)
def nnf_random(nnf, ht, wt, src_h, src_w, r, key):
    """§5.1: uniform random centres in [r, W-1-r] × [r, H-1-r] from the hash of (key, pixel)."""
    nx = src_w - 2 * r
    ny = src_h - 2 * r
    for row in prange(ht):
        y = np.int64(row)   # prange indices are unsigned; keep signed arithmetic
        for x in range(wt):
            kp = pcg_hash(key ^ (y * wt + x))
            nnf[y, x, 0] = r + ((pcg_hash(kp ^ 0) * nx) >> 32)
            nnf[y, x, 1] = r + ((pcg_hash(kp ^ 1) * ny) >> 32)


@njit(**_PJIT)
def nnf_upsample(coarse, hc, wc, fine, hf, wf, src_h, src_w, r):
    """§5.2: child (x, y) takes 2·parent + (x - 2·px, y - 2·py), clamped to the valid centre range."""
    for row in prange(hf):
        y = np.int64(row)   # prange indices are unsigned; keep signed arithmetic
        py = min(y >> 1, hc - 1)
        for x in range(wf):
            px = min(x >> 1, wc - 1)
            sx = 2 * coarse[py, px, 0] + (x - 2 * px)
            sy = 2 * coarse[py, px, 1] + (y - 2 * py)
            fine[y, x, 0] = min(max(sx, r), src_w - 1 - r)
            fine[y, x, 1] = min(max(sy, r), src_h - 1 - r)


@njit(**_PJIT)
def nnf_reduce(full, hf, wf, out, ho, wo, shift, src_h, src_w, r):
    """§5.3: level NNF from a full-resolution NNF: sample (x<<k) + (2^k>>1), coordinates >> k, clamp."""
    half = (1 << shift) >> 1
    for row in prange(ho):
        y = np.int64(row)   # prange indices are unsigned; keep signed arithmetic
        fy = min((y << shift) + half, hf - 1)
        for x in range(wo):
            fx = min((x << shift) + half, wf - 1)
            out[y, x, 0] = min(max(full[fy, fx, 0] >> shift, r), src_w - 1 - r)
            out[y, x, 1] = min(max(full[fy, fx, 1] >> shift, r), src_h - 1 - r)


# ---------------------------------------------------------------------------------------------------- error
@njit(**_PJIT)
def patch_error(src, tgt, src_w, ht, wt, c, p, nnf, err, active, all_pixels):
    """§4: E(t) = SSD of the target patch at t and the source patch at NNF(t) (no early termination)."""
    source = src.reshape(src.size)
    target = tgt.reshape(tgt.size)
    r = p // 2
    rowlen = p * c
    for row in prange(ht):
        y = np.int64(row)   # prange indices are unsigned; keep signed arithmetic
        tp = np.empty(p * p * c, np.int16)
        for x in range(wt):
            if not all_pixels and active[y, x] == 0:
                continue
            if x >= r and x < wt - r and y >= r and y < ht - r:
                e = _ssd(target, ((y - r) * wt + (x - r)) * c, wt * c, source,
                         ((nnf[y, x, 1] - r) * src_w + (nnf[y, x, 0] - r)) * c, src_w * c,
                         rowlen, p, np.int64(0), NO_BOUND)
            else:
                _gather_target_patch(target, ht, wt, c, p, x, y, tp)
                e = _ssd(tp, 0, rowlen, source, ((nnf[y, x, 1] - r) * src_w + (nnf[y, x, 0] - r)) * c,
                         src_w * c, rowlen, p, np.int64(0), NO_BOUND)
            err[y, x] = e


# ---------------------------------------------------------------------------------------------------- occupancy
# §6.1, gated like the CUDA kernels: each pass does nothing unless flags[0] ("the NNF or the level's p / λ
# changed since the cost map was built") is set; flag_clear resets it after the build.
@njit(**_JIT)
def occ_count(nnf, ht, wt, count, src_w, flags):
    """count[s] += number of target pixels whose NNF is s (``count`` is zero: occ_finish clears it)."""
    if flags[0] == 0:
        return
    for y in range(ht):
        for x in range(wt):
            count[nnf[y, x, 1], nnf[y, x, 0]] += 1


@njit(**_PJIT)
def box_rows(src, dst, h, w, r, flags):
    """dst[y, x] = Σ_{|d|<=r, 0<=x+d<W} src[y, x+d] (integer; a running sum along the row)."""
    if flags[0] == 0:
        return
    for row in prange(h):
        y = np.int64(row)   # prange indices are unsigned; keep signed arithmetic
        s = np.int64(0)
        for x in range(min(r, w - 1) + 1):
            s += src[y, x]
        for x in range(w):
            dst[y, x] = s
            if x + r + 1 < w:
                s += src[y, x + r + 1]
            if x - r >= 0:
                s -= src[y, x - r]


@njit(**_PJIT)
def box_cols(src, dst, h, w, r, flags):
    """dst[y, x] = Σ_{|d|<=r, 0<=y+d<H} src[y+d, x] (integer; whole rows added, so the inner loop vectorises)."""
    if flags[0] == 0:
        return
    for row in prange(h):
        y = np.int64(row)   # prange indices are unsigned; keep signed arithmetic
        for x in range(w):
            dst[y, x] = 0
        for yy in range(max(y - r, 0), min(y + r, h - 1) + 1):
            for x in range(w):
                dst[y, x] += src[yy, x]


@njit(**_PJIT)
def occ_finish(rows, cost, count, h, w, r, multiplier, flags):
    """The last column box, then cost[s] = (O(s) · occ_mul) >> 16 in int64; clears count[s]."""
    if flags[0] == 0:
        return
    for row in prange(h):
        y = np.int64(row)   # prange indices are unsigned; keep signed arithmetic
        footprint = np.zeros(w, np.int32)
        for yy in range(max(y - r, 0), min(y + r, h - 1) + 1):
            for x in range(w):
                footprint[x] += rows[yy, x]
        for x in range(w):
            cost[y, x] = (np.int64(footprint[x]) * multiplier) >> 16
            count[y, x] = 0


@njit(**_JIT)
def flag_clear(flags):
    """flags[0] = 0: the cost map matches the NNF."""
    flags[0] = 0


# ---------------------------------------------------------------------------------------------------- search
@njit(**_PJIT)
def pm_search(src, tgt, src_h, src_w, ht, wt, c, p, nnf_in, nnf_out, err, occ, active, moved, flags, steps,
              n_steps, radii, n_radii, key):
    """§6: one Jacobi PatchMatch iteration: propagation at ``steps`` then random search; sets flags[0] when a
    match moved."""
    source = src.reshape(src.size)
    target = tgt.reshape(tgt.size)
    r = p // 2
    rowlen = p * c
    sstride = src_w * c
    xmin = r
    xmax = src_w - 1 - r
    ymin = r
    ymax = src_h - 1 - r
    n_moved = 0
    for row in prange(ht):
        y = np.int64(row)   # prange indices are unsigned; keep signed arithmetic
        tp = np.empty(p * p * c, np.int16)
        for x in range(wt):
            cx = nnf_in[y, x, 0]
            cy = nnf_in[y, x, 1]
            if active[y, x] == 0:
                nnf_out[y, x, 0] = cx
                nnf_out[y, x, 1] = cy
                continue
            if x >= r and x < wt - r and y >= r and y < ht - r:
                tbuf = target
                toff = ((y - r) * wt + (x - r)) * c
                tstride = wt * c
            else:
                _gather_target_patch(target, ht, wt, c, p, x, y, tp)
                tbuf = tp
                toff = 0
                tstride = rowlen
            x0 = cx
            y0 = cy
            e = err[y, x]
            best = np.int64(e) + occ[cy, cx]
            # §6.2 propagation: neighbours at ±step (left, right, up, down), shifted back by the step
            for si in range(n_steps):
                st = np.int64(steps[si])
                for k in range(4):
                    dx = -st if k == 0 else (st if k == 1 else 0)
                    dy = -st if k == 2 else (st if k == 3 else 0)
                    nx = x + dx
                    ny = y + dy
                    if nx < 0 or nx >= wt or ny < 0 or ny >= ht:
                        continue
                    qx = nnf_in[ny, nx, 0] - dx
                    qy = nnf_in[ny, nx, 1] - dy
                    if qx < xmin or qx > xmax or qy < ymin or qy > ymax or (qx == cx and qy == cy):
                        continue
                    oc = occ[qy, qx]
                    if oc >= best:
                        continue
                    ee = _ssd(tbuf, toff, tstride, source, ((qy - r) * src_w + (qx - r)) * c, sstride,
                              rowlen, p, oc, best)
                    if np.int64(ee) + oc < best:
                        best = np.int64(ee) + oc
                        e = ee
                        cx = qx
                        cy = qy
            # §6.3 random search around the current best, radii largest first (the candidate test is written
            # out twice, as in the CUDA kernel: an inline helper returning a tuple measured 8 % slower)
            if n_radii > 0:
                kp = pcg_hash(key ^ (y * wt + x))
                for i in range(n_radii):
                    rad = np.int64(radii[i])
                    lox = max(cx - rad, xmin)
                    hix = min(cx + rad, xmax)
                    loy = max(cy - rad, ymin)
                    hiy = min(cy + rad, ymax)
                    qx = lox + ((pcg_hash(kp ^ (2 * i)) * (hix - lox + 1)) >> 32)
                    qy = loy + ((pcg_hash(kp ^ (2 * i + 1)) * (hiy - loy + 1)) >> 32)
                    if qx == cx and qy == cy:
                        continue
                    oc = occ[qy, qx]
                    if oc >= best:
                        continue
                    ee = _ssd(tbuf, toff, tstride, source, ((qy - r) * src_w + (qx - r)) * c, sstride,
                              rowlen, p, oc, best)
                    if np.int64(ee) + oc < best:
                        best = np.int64(ee) + oc
                        e = ee
                        cx = qx
                        cy = qy
            nnf_out[y, x, 0] = cx
            nnf_out[y, x, 1] = cy
            err[y, x] = e
            if cx != x0 or cy != y0:
                moved[y, x] = 1
                n_moved += 1
    if n_moved > 0:
        flags[0] = 1


# ---------------------------------------------------------------------------------------------------- vote
@njit(**_PJIT)
def vote(src, tgt, src_w, ht, wt, c, cs, p, nnf, err, need, all_pixels, weighted, error_scale, threshold,
         changed, moved):
    """§7: gather vote of the style channels; ``changed`` = some channel moved by >= threshold; clears
    ``moved`` (consumed by the dilation that produced ``need``)."""
    source = src.reshape(src.size)
    target = tgt.reshape(tgt.size)
    r = p // 2
    for row in prange(ht):
        y = np.int64(row)   # prange indices are unsigned; keep signed arithmetic
        acc = np.zeros(cs, np.int64)
        facc = np.zeros(cs, np.float32)
        for x in range(wt):
            moved[y, x] = 0
            if not all_pixels and need[y, x] == 0:
                changed[y, x] = 0
                continue
            for ch in range(cs):
                acc[ch] = 0
                facc[ch] = np.float32(0)
            n = 0
            wsum = np.float32(0)
            for oy in range(-r, r + 1):
                qy = y + oy
                if qy < 0 or qy >= ht:
                    continue
                for ox in range(-r, r + 1):
                    qx = x + ox
                    if qx < 0 or qx >= wt:
                        continue
                    base = ((nnf[qy, qx, 1] - oy) * src_w + (nnf[qy, qx, 0] - ox)) * c
                    if weighted:
                        w = np.float32(1) / (np.float32(1) + np.float32(err[qy, qx]) * error_scale)
                        for ch in range(cs):
                            facc[ch] = facc[ch] + w * np.float32(source[base + ch])
                        wsum = wsum + w
                    else:
                        for ch in range(cs):
                            acc[ch] += source[base + ch]
                    n += 1
            changed_here = 0
            tb = (y * wt + x) * c
            for ch in range(cs):
                if weighted:
                    value = np.int64(math.floor(facc[ch] / wsum + np.float32(0.5)))
                else:
                    value = (2 * acc[ch] + n) // (2 * n)
                if abs(value - np.int64(target[tb + ch])) >= threshold:
                    changed_here = 1
                target[tb + ch] = value
            changed[y, x] = changed_here


# ---------------------------------------------------------------------------------------------------- masks
@njit(**_PJIT)
def dilate_rows(src, dst, h, w, r, counter):
    """dst[y, x] = max of src[y, x-r..x+r] (clamped), uint8; resets counter[0] for the dilate_cols after."""
    counter[0] = 0
    for row in prange(h):
        y = np.int64(row)   # prange indices are unsigned; keep signed arithmetic
        for x in range(w):
            m = 0
            for xx in range(max(x - r, 0), min(x + r, w - 1) + 1):
                if src[y, xx] > m:
                    m = src[y, xx]
            dst[y, x] = m


@njit(**_PJIT)
def dilate_cols(src, dst, h, w, r, counter):
    """dst[y, x] = max of src[y-r..y+r, x] (clamped), uint8; counter[0] += the number of set pixels."""
    total = 0
    for row in prange(h):
        y = np.int64(row)   # prange indices are unsigned; keep signed arithmetic
        y0 = max(y - r, 0)
        y1 = min(y + r, h - 1)
        for x in range(w):
            m = 0
            for yy in range(y0, y1 + 1):
                if src[yy, x] > m:
                    m = src[yy, x]
            dst[y, x] = m
            total += m
    counter[0] += total
