// Patch-matching kernels of the guided synthesis (propagation/ALGORITHM.md), one kernel per data-parallel pass.
// Each kernel has a numba twin of the same name and parameter list in propagation/backends/cpu_kernels.py, and
// propagation/backends/passes.py maps every pass of ALGORITHM.md to both; the two are bit-identical.
//
// One source, three compilers:
//   * NVRTC at run time (kernels/cuda_runtime.py through cupy.RawModule, options NVRTC_OPTIONS: --fmad=false);
//   * nvcc -ptx in CI (a syntax error fails CI even without a GPU);
//   * the host C++ compiler through kernels/host_shim.h (kernels/host_build.py), so CI runs these very kernels
//     on the CPU and compares them with their numba twins.
// Hence: no #include (NVRTC has no system headers), no shared memory and no __syncthreads (the host shim runs
// the threads of a block one after another), integer arithmetic everywhere except the weighted vote (float32 in
// a fixed order, no FMA contraction), every pass Jacobi (reads one buffer, writes another or only its own
// pixel), integer atomics only where the order cannot matter (counting).
//
// Kernel signatures are parsed by kernels/source.py to marshal arguments: keep each kernel's parameter list in
// the form `extern "C" __global__ void NAME(type name, ...)`, types from the typedefs below or int/float.
//
// Layouts: images int16 [H,W,C] (C = style channels then guide channels), NNF int32 [H,W,2] = (x, y) source
// patch centre, error int32 [H,W], occupancy cost int64 [Hs,Ws], masks uint8 [H,W]. Indices are int32: the
// launcher refuses images with H*W*C >= 2^31.

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;
typedef short i16;
typedef unsigned char u8;

#define NO_BOUND (((i64)1) << 62)

__device__ __forceinline__ int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }
__device__ __forceinline__ int mini(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int maxi(int a, int b) { return a > b ? a : b; }

// PCG-style 32-bit hash (ALGORITHM.md §6.4); all arithmetic modulo 2^32.
__device__ __forceinline__ u32 pcg_hash(u32 value) {
    u32 state = value * 747796405u + 2891336453u;
    u32 word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// lo + floor(hash * n / 2^32): a uniform draw in [lo, lo + n).
__device__ __forceinline__ int draw(u32 hash, int lo, int n) {
    return lo + (int)(((u64)hash * (u64)(u32)n) >> 32);
}

// Floor division for i64 (Python's //), den > 0.
__device__ __forceinline__ i64 floordiv(i64 num, i64 den) {
    i64 q = num / den;
    if ((num % den != 0) && ((num < 0) != (den < 0))) q -= 1;
    return q;
}

// Patch SSD (§4.2) between the target patch centred at (x, y) (clamped coordinates) and the source patch
// centred at (sx, sy) (always inside). Rows in order, int32 modulo 2^32 like the reference; returns after a row
// once acc + occ >= best (early termination; NO_BOUND disables it).
__device__ __forceinline__ int patch_ssd(const i16* __restrict__ tgt, int ht, int wt, int x, int y,
                                         const i16* __restrict__ src, int src_w, int sx, int sy, int c, int p,
                                         i64 occ, i64 best) {
    const int r = p >> 1;
    const int rowlen = p * c;
    const bool inside = x >= r && x < wt - r && y >= r && y < ht - r;
    u32 acc = 0u;
    for (int dy = 0; dy < p; ++dy) {
        const i16* s = src + ((sy - r + dy) * src_w + (sx - r)) * c;
        if (inside) {
            const i16* t = tgt + ((y - r + dy) * wt + (x - r)) * c;
            for (int j = 0; j < rowlen; ++j) {
                int d = (int)t[j] - (int)s[j];
                acc += (u32)d * (u32)d;
            }
        } else {
            const int ty = clampi(y - r + dy, 0, ht - 1);
            for (int dx = 0; dx < p; ++dx) {
                const i16* t = tgt + (ty * wt + clampi(x - r + dx, 0, wt - 1)) * c;
                for (int ch = 0; ch < c; ++ch) {
                    int d = (int)t[ch] - (int)s[dx * c + ch];
                    acc += (u32)d * (u32)d;
                }
            }
        }
        if ((i64)(int)acc + occ >= best) return (int)acc;
    }
    return (int)acc;
}

// ------------------------------------------------------------------------------------------------ NNF init (§5)
// §5.1 uniform random centres in [r, W-1-r] x [r, H-1-r] from the hash of (key, pixel).
extern "C" __global__ void nnf_random(int* nnf, int ht, int wt, int src_h, int src_w, int r, u32 key) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= wt || y >= ht) return;
    const int i = y * wt + x;
    const u32 kp = pcg_hash(key ^ (u32)i);
    nnf[2 * i] = draw(pcg_hash(kp ^ 0u), r, src_w - 2 * r);
    nnf[2 * i + 1] = draw(pcg_hash(kp ^ 1u), r, src_h - 2 * r);
}

// §5.2 child (x, y) takes 2*parent + (x - 2*px, y - 2*py), clamped to the valid centre range.
extern "C" __global__ void nnf_upsample(const int* coarse, int hc, int wc, int* fine, int hf, int wf, int src_h,
                                        int src_w, int r) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= wf || y >= hf) return;
    const int py = mini(y >> 1, hc - 1);
    const int px = mini(x >> 1, wc - 1);
    const int parent = py * wc + px;
    const int i = y * wf + x;
    fine[2 * i] = clampi(2 * coarse[2 * parent] + (x - 2 * px), r, src_w - 1 - r);
    fine[2 * i + 1] = clampi(2 * coarse[2 * parent + 1] + (y - 2 * py), r, src_h - 1 - r);
}

// §5.3 a full-resolution NNF brought `shift` octaves down: sample (x<<k) + (2^k>>1), coordinates >> k, clamp.
extern "C" __global__ void nnf_reduce(const int* full, int hf, int wf, int* out, int ho, int wo, int shift,
                                      int src_h, int src_w, int r) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= wo || y >= ho) return;
    const int half = (1 << shift) >> 1;
    const int fy = mini((y << shift) + half, hf - 1);
    const int fx = mini((x << shift) + half, wf - 1);
    const int j = fy * wf + fx;
    const int i = y * wo + x;
    out[2 * i] = clampi(full[2 * j] >> shift, r, src_w - 1 - r);
    out[2 * i + 1] = clampi(full[2 * j + 1] >> shift, r, src_h - 1 - r);
}

// ------------------------------------------------------------------------------------------------ error (§4)
// E(t) = SSD of the target patch at t and the source patch at NNF(t), without early termination, at active
// pixels (or all pixels).
extern "C" __global__ void patch_error(const i16* src, const i16* tgt, int src_w, int ht, int wt, int c, int p,
                                       const int* nnf, int* err, const u8* active, int all_pixels) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= wt || y >= ht) return;
    const int i = y * wt + x;
    if (!all_pixels && active[i] == 0) return;
    err[i] = patch_ssd(tgt, ht, wt, x, y, src, src_w, nnf[2 * i], nnf[2 * i + 1], c, p, 0, NO_BOUND);
}

// ------------------------------------------------------------------------------------------------ occupancy (§6.1)
// The occupancy cost map is rebuilt from the NNF when flags[0] is set ("the NNF or the level's p / λ changed since
// the last build"; set by pm_search and by the host on reset_patch):
// occ_count -> box_rows -> box_cols -> box_rows -> occ_finish (box_cols + cost, and clears `count` for the next
// build) -> flag_clear. Counting uses integer atomics: the result does not depend on their order.
extern "C" __global__ void occ_count(const int* nnf, int ht, int wt, int* count, int src_w, const int* flags) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= wt || y >= ht || flags[0] == 0) return;
    const int i = y * wt + x;
    atomicAdd(count + nnf[2 * i + 1] * src_w + nnf[2 * i], 1);
}

// dst[y, x] = sum of src[y, x-r..x+r] within the image (int32 modulo 2^32 like the reference).
extern "C" __global__ void box_rows(const int* src, int* dst, int h, int w, int r, const int* flags) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h || flags[0] == 0) return;
    const int x1 = mini(x + r, w - 1);
    u32 sum = 0u;
    for (int xx = maxi(x - r, 0); xx <= x1; ++xx) sum += (u32)src[y * w + xx];
    dst[y * w + x] = (int)sum;
}

// dst[y, x] = sum of src[y-r..y+r, x] within the image.
extern "C" __global__ void box_cols(const int* src, int* dst, int h, int w, int r, const int* flags) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h || flags[0] == 0) return;
    const int y1 = mini(y + r, h - 1);
    u32 sum = 0u;
    for (int yy = maxi(y - r, 0); yy <= y1; ++yy) sum += (u32)src[yy * w + x];
    dst[y * w + x] = (int)sum;
}

// Last column box, then cost[s] = (O(s) * occ_mul) >> 16 in int64 (modulo 2^64); clears count[s].
extern "C" __global__ void occ_finish(const int* rows, i64* cost, int* count, int h, int w, int r, i64 multiplier,
                                      const int* flags) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h || flags[0] == 0) return;
    const int y1 = mini(y + r, h - 1);
    u32 sum = 0u;
    for (int yy = maxi(y - r, 0); yy <= y1; ++yy) sum += (u32)rows[yy * w + x];
    const i64 footprint = (i64)(int)sum;
    cost[y * w + x] = (i64)((u64)footprint * (u64)multiplier) >> 16;
    count[y * w + x] = 0;
}

// flags[0] = 0 (one thread; runs after every kernel of the occupancy build has read the flag).
extern "C" __global__ void flag_clear(int* flags) {
    if (blockIdx.x == 0 && threadIdx.x == 0) flags[0] = 0;
}

// ------------------------------------------------------------------------------------------------ search (§6)
// One Jacobi PatchMatch iteration at active pixels: propagation from the neighbours at +-step (left, right, up,
// down) for each step, shifted back by the step (§6.2), then random search around the current best, radii in
// the given order (§6.3), candidates drawn from the counter-based hash of (key, pixel, radius index) (§6.4).
// A candidate replaces the current match iff its error + occupancy cost is strictly smaller. Reads nnf_in,
// writes nnf_out; err and moved only at the thread's own pixel; sets flags[0] when a match moved.
extern "C" __global__ void __launch_bounds__(256) pm_search(
        const i16* src, const i16* tgt, int src_h, int src_w, int ht, int wt, int c, int p, const int* nnf_in,
        int* nnf_out, int* err, const i64* occ, const u8* active, u8* moved, int* flags, const int* steps,
        int n_steps, const int* radii, int n_radii, u32 key) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= wt || y >= ht) return;
    const int i = y * wt + x;
    int cx = nnf_in[2 * i];
    int cy = nnf_in[2 * i + 1];
    if (active[i] == 0) {
        nnf_out[2 * i] = cx;
        nnf_out[2 * i + 1] = cy;
        return;
    }
    const int r = p >> 1;
    const int xmin = r, xmax = src_w - 1 - r, ymin = r, ymax = src_h - 1 - r;
    const int x0 = cx, y0 = cy;
    int e = err[i];
    i64 best = (i64)e + occ[cy * src_w + cx];
    for (int si = 0; si < n_steps; ++si) {
        const int st = steps[si];
        for (int k = 0; k < 4; ++k) {
            const int dx = k == 0 ? -st : (k == 1 ? st : 0);
            const int dy = k == 2 ? -st : (k == 3 ? st : 0);
            const int nx = x + dx, ny = y + dy;
            if (nx < 0 || nx >= wt || ny < 0 || ny >= ht) continue;
            const int j = ny * wt + nx;
            const int qx = nnf_in[2 * j] - dx;
            const int qy = nnf_in[2 * j + 1] - dy;
            if (qx < xmin || qx > xmax || qy < ymin || qy > ymax || (qx == cx && qy == cy)) continue;
            const i64 oc = occ[qy * src_w + qx];
            if (oc >= best) continue;   // cannot win (the SSD is >= 0): skip the evaluation
            const int ee = patch_ssd(tgt, ht, wt, x, y, src, src_w, qx, qy, c, p, oc, best);
            if ((i64)ee + oc < best) {
                best = (i64)ee + oc;
                e = ee;
                cx = qx;
                cy = qy;
            }
        }
    }
    if (n_radii > 0) {
        const u32 kp = pcg_hash(key ^ (u32)i);
        for (int ri = 0; ri < n_radii; ++ri) {
            const int rad = radii[ri];
            const int lox = maxi(cx - rad, xmin), hix = mini(cx + rad, xmax);
            const int loy = maxi(cy - rad, ymin), hiy = mini(cy + rad, ymax);
            const int qx = draw(pcg_hash(kp ^ (u32)(2 * ri)), lox, hix - lox + 1);
            const int qy = draw(pcg_hash(kp ^ (u32)(2 * ri + 1)), loy, hiy - loy + 1);
            if (qx == cx && qy == cy) continue;
            const i64 oc = occ[qy * src_w + qx];
            if (oc >= best) continue;
            const int ee = patch_ssd(tgt, ht, wt, x, y, src, src_w, qx, qy, c, p, oc, best);
            if ((i64)ee + oc < best) {
                best = (i64)ee + oc;
                e = ee;
                cx = qx;
                cy = qy;
            }
        }
    }
    nnf_out[2 * i] = cx;
    nnf_out[2 * i + 1] = cy;
    err[i] = e;
    if (cx != x0 || cy != y0) {
        moved[i] = 1;
        flags[0] = 1;
    }
}

// ------------------------------------------------------------------------------------------------ vote (§7)
#define MAX_STYLE_CHANNELS 8

// Gather vote of the style channels of pixel t from the p*p patches that cover it (contributors outside the
// target skipped). Plain: round-half-up integer mean (2*sum + n) // (2n). Weighted: weights
// 1 / (1 + E(q) * error_scale), sums in float32 in (oy, ox, channel) order, floor(sum / wsum + 0.5); no FMA.
// changed[t] = some channel moved by >= threshold. Pixels with need == 0 (unless all_pixels) keep their value
// and get changed = 0. Also clears moved[t] (consumed by the dilation that produced `need`).
extern "C" __global__ void vote(const i16* src, i16* tgt, int src_w, int ht, int wt, int c, int cs, int p,
                                const int* nnf, const int* err, const u8* need, int all_pixels, int weighted,
                                float error_scale, int threshold, u8* changed, u8* moved) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= wt || y >= ht) return;
    const int i = y * wt + x;
    moved[i] = 0;
    if (!all_pixels && need[i] == 0) {
        changed[i] = 0;
        return;
    }
    const int r = p >> 1;
    i64 acc[MAX_STYLE_CHANNELS];
    float facc[MAX_STYLE_CHANNELS];
    for (int ch = 0; ch < cs; ++ch) {
        acc[ch] = 0;
        facc[ch] = 0.0f;
    }
    int n = 0;
    float wsum = 0.0f;
    for (int oy = -r; oy <= r; ++oy) {
        const int qy = y + oy;
        if (qy < 0 || qy >= ht) continue;
        for (int ox = -r; ox <= r; ++ox) {
            const int qx = x + ox;
            if (qx < 0 || qx >= wt) continue;
            const int q = qy * wt + qx;
            const i16* s = src + ((nnf[2 * q + 1] - oy) * src_w + (nnf[2 * q] - ox)) * c;
            if (weighted) {
                const float w = 1.0f / (1.0f + (float)err[q] * error_scale);
                for (int ch = 0; ch < cs; ++ch) facc[ch] = facc[ch] + w * (float)s[ch];
                wsum = wsum + w;
            } else {
                for (int ch = 0; ch < cs; ++ch) acc[ch] += (i64)s[ch];
            }
            n += 1;
        }
    }
    int moved_value = 0;
    i16* t = tgt + i * c;
    for (int ch = 0; ch < cs; ++ch) {
        i64 value;
        if (weighted) {
            value = (i64)floorf(facc[ch] / wsum + 0.5f);
        } else {
            value = floordiv(2 * acc[ch] + n, 2 * (i64)n);
        }
        const i64 diff = value - (i64)t[ch];
        if ((diff < 0 ? -diff : diff) >= (i64)threshold) moved_value = 1;
        t[ch] = (i16)value;
    }
    changed[i] = (u8)moved_value;
}

// ------------------------------------------------------------------------------------------------ masks (§8)
// dst[y, x] = max of src[y, x-r..x+r] (clamped). Also resets *counter for the dilate_cols that follows.
extern "C" __global__ void dilate_rows(const u8* src, u8* dst, int h, int w, int r, int* counter) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x == 0 && y == 0) counter[0] = 0;
    if (x >= w || y >= h) return;
    const int x1 = mini(x + r, w - 1);
    u8 m = 0;
    for (int xx = maxi(x - r, 0); xx <= x1; ++xx) m = src[y * w + xx] > m ? src[y * w + xx] : m;
    dst[y * w + x] = m;
}

// dst[y, x] = max of src[y-r..y+r, x] (clamped); *counter += number of set pixels (integer atomics).
extern "C" __global__ void dilate_cols(const u8* src, u8* dst, int h, int w, int r, int* counter) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) return;
    const int y1 = mini(y + r, h - 1);
    u8 m = 0;
    for (int yy = maxi(y - r, 0); yy <= y1; ++yy) m = src[yy * w + x] > m ? src[yy * w + x] : m;
    dst[y * w + x] = m;
    if (m) atomicAdd(counter, (int)m);
}
