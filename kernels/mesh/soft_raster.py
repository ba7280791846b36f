"""Tiled soft rasterization of triangle meshes (SoftRas, DIB-R, hard) with hand-written backward passes.

Inputs are screen-space faces `fv [B, F, 3, 3]`: for corner k of face j in image b, (x, y) in pixels
(pixel centres at +0.5, OpenCV) and camera z. Per-corner attributes are `fc [B, F, 3, C]`.

Pipeline (every kernel takes ndarrays, so image and mesh sizes never trigger a recompile):

1. `setup` (one thread per face): validity (all corners in front of `near`, non-degenerate, finite)
   and a per-face record `fd [B, F, R]` (bounding box grown by the influence radius, corners, z,
   1 / A2, inverse squared edge lengths) plus the inclusive pixel rectangle `fpx [B, F, 4]` of pixel
   centres the grown box may hold (empty for skipped faces, which are never binned).
2. `count` / `fill` (one thread per (image, chunk of consecutive faces)): a stable parallel counting
   sort of (tile, face) pairs into per-tile face lists in CSR form (the host turns the per-chunk
   counts into offsets with `torch.cumsum`), plus a copy of each listed face's record in list order
   `td [N, R]`, so the forward loop streams through contiguous memory. Lists come out sorted by
   face index: results are deterministic and DIB-R's "first knum candidates" rule is exact.
3. forward (one thread iteration per PW x PW pixel packet, iterated tile by tile): loop over the
   faces of the packet's tile only; a face whose grown box misses the packet costs one test, the
   others are evaluated for all LANES pixels at once as `ti.Vector`s with `ti.select` instead of
   branches, which LLVM turns into SIMD code (Taichi does not vectorise across loop iterations).
4. backward (one thread per face): loop over the packets of the face's pixel rectangle, recompute
   the face's contribution there from the saved per-pixel aggregates (alpha, the softmax maximum and
   denominator, the z-buffer, DIB-R's product of the soft-mask factors), accumulate the face's
   gradient in registers and write it once: no atomics, deterministic. The host (torch autograd)
   scatters face gradients to the vertices.

Every formula of the backward pass is written out by hand (no Taichi autodiff through the face loop):
- SoftRas: alpha = 1 - prod_j (1 - D_j) gives d alpha / d x_j = (1 - alpha) D_j for
  D_j = sigmoid(x_j), x_j = +-d_j^2 / sigma; the depth softmax rgb = (sum_j D_j e_j C_j + e_bg bg) / W
  gives d rgb / d x_j = e_j (C_j - rgb) / W * D_j (1 - D_j), d rgb / d z_j = D_j e_j (C_j - rgb) /
  (gamma W), d rgb / d C_j = D_j e_j / W;
- DIB-R: foreground rgb = sum_k b_k c_k gives d / d c_k = b_k and d / d b through the perspective
  barycentrics b_k = (w_k / z_k) / sum_i (w_i / z_i) and the screen barycentrics w_k = E_k / A2;
  background alpha = 1 - prod_i (1 - p_i) gives d alpha / d p_j = prod_{i != j} (1 - p_i), kept exact
  when a factor is 0 by counting the zero factors;
- d(d^2) / d(corners) for the closest point q = a + t (b - a) of an edge: -2 r (1 - t) and -2 r t.

Distances are computed in pixels and converted to NDC with `s2 = (2 / min(W, H))^2`.
No `from __future__ import annotations` here (Taichi reads the annotations).
"""

import functools
from dataclasses import dataclass

import taichi as ti

from taichi_sdf.kernels.dtypes import ti_float

# Face record slots (fd [B, F, R] and td [N, R]): grown bbox, corners (x0, y0, x1, y1, x2, y2),
# camera z of the corners, 1 / A2 (A2 = doubled signed area), 1 / |edge e|^2 for edges
# 0 (v0 v1), 1 (v1 v2), 2 (v2 v0), A2, validity.
R_XMIN, R_XMAX, R_YMIN, R_YMAX = 0, 1, 2, 3
R_X0 = 4
R_Z0 = 10
R_INV_A2 = 13
R_INV_L0 = 14
R_A2 = 17
R_VALID = 18
RECORD = 20
BIG = 2.0**100  # exactly representable in f32 and f64
# Forward kernels shade packets of PW x PW pixels as LANES-wide vectors (16 float32 lanes fill an
# AVX-512 register); tile sizes must be multiples of PW.
PW = 4
LANES = PW * PW
X_MAX = 80.0  # |sign * d^2 / sigma| is clamped here before exp (exp(80) < float32 max)


@dataclass(frozen=True)
class RasterConfig:
    """Compile-time variant of the raster kernels."""

    dtype: str = "f32"  # "f32" | "f64"
    mode: str = "softras"  # "softras" | "dibr" | "hard"
    channels: int = 0  # per-vertex attribute channels C (0: silhouette only)


@functools.cache
def binning_kernels(dtype: str):
    """(setup, count, fill).

    setup(fv [B,F,3,3], fd [B*F*R] (flat), fpx [B,F,4] i32, radius, near, area_eps, area_rel, width, height)
    count(fpx, hist [B, nty*ntx, nchunk] i32 (zeros), tile, ntx)
    fill(fpx, fd (flat), offsets [B*nty*ntx*nchunk + 1] i32, cursor [B, nty*ntx, nchunk] i32 (zeros),
         tile_faces [N] i32, td [N * R] (flat), tile, ntx)
    """
    f = ti_float(dtype)
    fv_t = ti.types.ndarray(dtype=f, ndim=4)
    f1_t = ti.types.ndarray(dtype=f, ndim=1)
    i3_t = ti.types.ndarray(dtype=ti.i32, ndim=3)
    i1_t = ti.types.ndarray(dtype=ti.i32, ndim=1)

    @ti.kernel
    def setup(
        fv: fv_t, fd: f1_t, fpx: i3_t,
        radius: f, near: f, area_eps: f, area_rel: f, width: ti.i32, height: ti.i32,
    ):  # fmt: skip
        for b, j in ti.ndrange(fv.shape[0], fv.shape[1]):
            x0, y0, z0 = fv[b, j, 0, 0], fv[b, j, 0, 1], fv[b, j, 0, 2]
            x1, y1, z1 = fv[b, j, 1, 0], fv[b, j, 1, 1], fv[b, j, 1, 2]
            x2, y2, z2 = fv[b, j, 2, 0], fv[b, j, 2, 1], fv[b, j, 2, 2]
            a2 = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
            finite = 1
            for v in ti.static([x0, y0, z0, x1, y1, z1, x2, y2, z2]):
                if not (ti.abs(v) < BIG):  # also false for NaN
                    finite = 0
            # Degenerate: |A2| within rounding noise of zero (u * |coords| * edge length) or tiny.
            mag = ti.max(ti.max(ti.max(ti.abs(x0), ti.abs(y0)), ti.max(ti.abs(x1), ti.abs(y1))),
                         ti.max(ti.max(ti.abs(x2), ti.abs(y2)), 1.0))  # fmt: skip
            lens = ti.Vector([(x1 - x0) ** 2 + (y1 - y0) ** 2, (x2 - x1) ** 2 + (y2 - y1) ** 2,
                              (x0 - x2) ** 2 + (y0 - y2) ** 2])  # fmt: skip
            a_min = area_eps + area_rel * mag * ti.sqrt(lens.max())
            valid = finite == 1 and z0 > near and z1 > near and z2 > near and ti.abs(a2) > a_min
            xmin = ti.min(ti.min(x0, x1), x2) - radius
            xmax = ti.max(ti.max(x0, x1), x2) + radius
            ymin = ti.min(ti.min(y0, y1), y2) - radius
            ymax = ti.max(ti.max(y0, y1), y2) + radius
            i_lo, i_hi, j_lo, j_hi = 0, -1, 0, -1
            if valid:
                wf = ti.cast(width, f)
                hf = ti.cast(height, f)
                # pixel i is touched iff xmin <= i + 0.5 <= xmax; round outwards (a superset is fine)
                i_lo = ti.max(ti.cast(ti.floor(ti.min(ti.max(xmin - 0.5, -1.0), wf)), ti.i32), 0)
                i_hi = ti.min(ti.cast(ti.ceil(ti.min(ti.max(xmax - 0.5, -1.0), wf)), ti.i32), width - 1)
                j_lo = ti.max(ti.cast(ti.floor(ti.min(ti.max(ymin - 0.5, -1.0), hf)), ti.i32), 0)
                j_hi = ti.min(ti.cast(ti.ceil(ti.min(ti.max(ymax - 0.5, -1.0), hf)), ti.i32), height - 1)
                if i_lo > i_hi or j_lo > j_hi:
                    i_lo, i_hi, j_lo, j_hi = 0, -1, 0, -1
            rec = ti.Vector.zero(f, RECORD)
            for k, val in ti.static(enumerate([xmin, xmax, ymin, ymax, x0, y0, x1, y1, x2, y2, z0, z1, z2])):
                rec[k] = val  # R_XMIN .. R_YMAX, R_X0 .. R_X0 + 5, R_Z0 .. R_Z0 + 2
            rec[R_A2] = a2
            if valid:
                rec[R_VALID] = 1.0
                rec[R_INV_A2] = 1.0 / a2
                for e in ti.static(range(3)):
                    if lens[e] > 0:
                        rec[R_INV_L0 + e] = 1.0 / lens[e]
            dst = (b * fv.shape[1] + j) * RECORD
            for k in ti.static(range(RECORD)):
                fd[dst + k] = rec[k]
            fpx[b, j, 0] = i_lo
            fpx[b, j, 1] = i_hi
            fpx[b, j, 2] = j_lo
            fpx[b, j, 3] = j_hi

    @ti.kernel
    def count(fpx: i3_t, hist: i3_t, tile: ti.i32, ntx: ti.i32):
        # hist [B, ntiles, nchunk]: faces of chunk c (a contiguous range of face ids) per tile
        ti.loop_config(block_dim=1)
        for b, c in ti.ndrange(hist.shape[0], hist.shape[2]):
            nf = fpx.shape[1]
            nc = hist.shape[2]
            for j in range(c * nf // nc, (c + 1) * nf // nc):
                if fpx[b, j, 0] <= fpx[b, j, 1]:
                    for ty in range(fpx[b, j, 2] // tile, fpx[b, j, 3] // tile + 1):
                        for tx in range(fpx[b, j, 0] // tile, fpx[b, j, 1] // tile + 1):
                            hist[b, ty * ntx + tx, c] += 1

    @ti.kernel
    def fill(fpx: i3_t, fd: f1_t, offsets: i1_t, cursor: i3_t, tile_faces: i1_t, td: f1_t, tile: ti.i32,
             ntx: ti.i32):  # fmt: skip
        # offsets: exclusive prefix sum of hist in [b][tile][chunk] order, so each tile's list holds
        # chunk 0's faces, then chunk 1's, ...: sorted by face id, whatever the thread timing.
        ti.loop_config(block_dim=1)
        for b, c in ti.ndrange(cursor.shape[0], cursor.shape[2]):
            nf = fpx.shape[1]
            nc = cursor.shape[2]
            nt = cursor.shape[1]
            for j in range(c * nf // nc, (c + 1) * nf // nc):
                if fpx[b, j, 0] <= fpx[b, j, 1]:
                    for ty in range(fpx[b, j, 2] // tile, fpx[b, j, 3] // tile + 1):
                        for tx in range(fpx[b, j, 0] // tile, fpx[b, j, 1] // tile + 1):
                            t = ty * ntx + tx
                            slot = cursor[b, t, c]
                            n = offsets[(b * nt + t) * nc + c] + slot
                            tile_faces[n] = j
                            src = (b * nf + j) * RECORD
                            for k in ti.static(range(RECORD)):
                                td[n * RECORD + k] = fd[src + k]
                            cursor[b, t, c] = slot + 1

    return setup, count, fill


@functools.cache
def raster_kernels(cfg: RasterConfig):
    """(forward, backward) for one mode; backward is None for "hard".

    forward(fc [B,F,3,C'], offsets [B*nty*ntx+1] i32, tile_faces [N] i32, td [N*R], bg [C'],
            rgb [B,H,W,C'], alpha [B,H,W], depth [B,H,W], face_id [B,H,W] i32, bary [B,H,W,3],
            aux..., B, H, W, scalars...), every image passed as a flat 1-D view
    with C' = max(C, 1) (colour arguments are ignored when C = 0) and per mode the aux outputs:
    softras m (running max of the normalised inverse depth) and wt (softmax denominator), both
    [B,H,W]; dibr/hard prod (product of the non-zero factors 1 - p_j), nzero (number of zero
    factors, i32) and last (id of the last soft-mask candidate, i32), all [B,H,W].
    backward(fc, fd [B*F*R] (flat), fpx [B,F,4] i32, face_id (flat), [dibr: nzero, last (flat)],
             pix [B*H*W*K] (per-pixel record, see the kernels), flags [B, ceil(H/PW), ceil(W/PW)] i32
             (packets holding any gradient), grad_fv [B,F,3,3], grad_fc [B,F,3,C'], height, width,
             scalars...) accumulates into the zero-filled grad_fv, grad_fc.
    """
    f = ti_float(cfg.dtype)
    C = cfg.channels
    CC = max(C, 1)
    mode = cfg.mode

    fv_t = ti.types.ndarray(dtype=f, ndim=4)
    fc_t = ti.types.ndarray(dtype=f, ndim=4)
    i3_t = ti.types.ndarray(dtype=ti.i32, ndim=3)
    i1_t = ti.types.ndarray(dtype=ti.i32, ndim=1)
    f1_t = ti.types.ndarray(dtype=f, ndim=1)
    K_SOFTRAS = 2 if C == 0 else 5 + C  # per-pixel backward record sizes (see the backward kernels)
    K_DIBR = 3 + C

    @ti.func
    def load_colors(fc: ti.template(), b, j):
        col = ti.Matrix.zero(f, 3, CC)
        if ti.static(C > 0):
            for k, c in ti.static(ti.ndrange(3, C)):
                col[k, c] = fc[b, j, k, c]
        return col

    V = ti.types.vector(LANES, f)
    I = ti.types.vector(LANES, ti.i32)

    @ti.func
    def packet_setup(b, ty, tx, k, tile, height, width):
        """Pixel centres of packet k (a PW x PW block) of tile (ty, tx): x [L], y [L], the packet's
        box of centres, and the lanes inside the image."""
        npk = tile // PW
        px0 = tx * tile + (k % npk) * PW
        py0 = ty * tile + (k // npk) * PW
        pxv = V(0.0)
        pyv = V(0.0)
        valid = I(0)
        for l in ti.static(range(LANES)):
            pxv[l] = ti.cast(px0 + l % PW, f) + 0.5
            pyv[l] = ti.cast(py0 + l // PW, f) + 0.5
            valid[l] = 1 if (px0 + l % PW < width and py0 + l // PW < height) else 0
        x_lo = ti.cast(px0, f) + 0.5
        y_lo = ti.cast(py0, f) + 0.5
        return px0, py0, pxv, pyv, x_lo, x_lo + (PW - 1), y_lo, y_lo + (PW - 1), valid > 0

    @ti.func
    def packet_edges(pxv, pyv, td: ti.template(), base):
        """Per lane (pixel centres pxv, pyv against the face record at td[base]): screen
        barycentrics w0, w1, w2, the inside mask, the squared distances to the three edge lines
        (l0, l1, l2; edge 0 = v0 v1, 1 = v1 v2, 2 = v2 v0), the squared distances to the segments
        whose line the pixel lies beyond (s0, s1, s2; BIG for the others) and the segments' closest
        points as parameters t0, t1, t2 and residuals r = p - q. Branch-free, so LLVM vectorises it."""
        x0, y0 = td[base + R_X0], td[base + R_X0 + 1]
        x1, y1 = td[base + R_X0 + 2], td[base + R_X0 + 3]
        x2, y2 = td[base + R_X0 + 4], td[base + R_X0 + 5]
        ia = td[base + R_INV_A2]
        il0, il1, il2 = td[base + R_INV_L0], td[base + R_INV_L0 + 1], td[base + R_INV_L0 + 2]
        ax, ay = x0 - pxv, y0 - pyv
        bx, by = x1 - pxv, y1 - pyv
        cx, cy = x2 - pxv, y2 - pyv
        e0 = bx * cy - by * cx
        e1 = cx * ay - cy * ax
        e2 = ax * by - ay * bx
        w0, w1, w2 = e0 * ia, e1 * ia, e2 * ia
        inside = (w0 >= 0.0) & (w1 >= 0.0) & (w2 >= 0.0)
        l0, l1, l2 = e2 * e2 * il0, e0 * e0 * il1, e1 * e1 * il2
        # segment a -> a + e, with a - p given: t = clamp((p - a) . e / |e|^2), r = p - a - t e
        ex, ey = x1 - x0, y1 - y0
        t0 = ti.min(ti.max(-(ax * ex + ay * ey) * il0, 0.0), 1.0)
        rx0, ry0 = -ax - t0 * ex, -ay - t0 * ey
        s0 = ti.select(w2 < 0.0, rx0 * rx0 + ry0 * ry0, BIG)
        ex, ey = x2 - x1, y2 - y1
        t1 = ti.min(ti.max(-(bx * ex + by * ey) * il1, 0.0), 1.0)
        rx1, ry1 = -bx - t1 * ex, -by - t1 * ey
        s1 = ti.select(w0 < 0.0, rx1 * rx1 + ry1 * ry1, BIG)
        ex, ey = x0 - x2, y0 - y2
        t2 = ti.min(ti.max(-(cx * ex + cy * ey) * il2, 0.0), 1.0)
        rx2, ry2 = -cx - t2 * ex, -cy - t2 * ey
        s2 = ti.select(w1 < 0.0, rx2 * rx2 + ry2 * ry2, BIG)
        return w0, w1, w2, inside, l0, l1, l2, s0, s1, s2, t0, t1, t2, rx0, ry0, rx1, ry1, rx2, ry2

    @ti.func
    def packet_geom(pxv, pyv, td: ti.template(), base):
        """Per lane: w0, w1, w2, inside mask and the squared distance (pixels^2) to the triangle's
        boundary (inside: nearest edge line, by convexity; outside: nearest segment)."""
        w0, w1, w2, inside, l0, l1, l2, s0, s1, s2, _t0, _t1, _t2, _a, _b, _c, _d, _e, _f = packet_edges(
            pxv, pyv, td, base)  # fmt: skip
        d2 = ti.select(inside, ti.min(ti.min(l0, l1), l2), ti.min(ti.min(s0, s1), s2))
        return w0, w1, w2, inside, d2

    @ti.func
    def packet_persp(w0, w1, w2, td: ti.template(), base):
        """Per lane perspective-correct barycentrics b0, b1, b2 and camera z."""
        q0 = w0 / td[base + R_Z0]
        q1 = w1 / td[base + R_Z0 + 1]
        q2 = w2 / td[base + R_Z0 + 2]
        inv = 1.0 / (q0 + q1 + q2)
        return q0 * inv, q1 * inv, q2 * inv, inv

    @ti.func
    def packet_write_front(depth: ti.template(), face_id: ti.template(), bary_out: ti.template(), q, l,
                           front, zbest, b0, b1, b2):  # fmt: skip
        if front[l] >= 0:
            depth[q] = zbest[l]
            face_id[q] = front[l]
            bary_out[q * 3] = b0[l]
            bary_out[q * 3 + 1] = b1[l]
            bary_out[q * 3 + 2] = b2[l]
        else:
            depth[q] = 0.0
            face_id[q] = -1
            bary_out[q * 3] = 0.0
            bary_out[q * 3 + 1] = 0.0
            bary_out[q * 3 + 2] = 0.0

    # ------------------------------------------------------------------------------------------ softras
    @ti.kernel
    def softras_forward(
        fc: fc_t, offsets: i1_t, tile_faces: i1_t, td: f1_t, bg: f1_t,
        rgb: f1_t, alpha: f1_t, depth: f1_t, face_id: i1_t, bary_out: f1_t, m_out: f1_t, w_out: f1_t,
        batch: ti.i32, height: ti.i32, width: ti.i32, tile: ti.i32, ntx: ti.i32, nty: ti.i32,
        s2: f, sigma: f, thr: f, gamma: f, far: f, near: f, eps: f, clip_eps: f,
    ):  # fmt: skip
        # one thread iteration = one packet of PW x PW pixels (LANES SIMD lanes) against every face
        # listed for its tile; the face's grown box is tested against the packet's box first
        npk = tile // PW
        ti.loop_config(block_dim=4)
        for b, ty, tx, k in ti.ndrange(batch, nty, ntx, npk * npk):
            px0, py0, pxv, pyv, x_lo, x_hi, y_lo, y_hi, valid = packet_setup(b, ty, tx, k, tile, height, width)
            if valid.any():
                t_id = (b * nty + ty) * ntx + tx
                prod = V(1.0)
                front = I(-1)
                zbest = V(0.0)
                fb0, fb1, fb2 = V(0.0), V(0.0), V(0.0)
                m = V(0.0) + eps
                wsum = V(0.0)
                acc = ti.Matrix.zero(f, CC, LANES)
                for n in range(offsets[t_id], offsets[t_id + 1]):
                    base = n * RECORD
                    if (td[base + R_XMIN] > x_hi or td[base + R_XMAX] < x_lo
                            or td[base + R_YMIN] > y_hi or td[base + R_YMAX] < y_lo):  # fmt: skip
                        continue
                    w0, w1, w2, inside, d2 = packet_geom(pxv, pyv, td, base)
                    d2n = d2 * s2
                    keep = inside | (d2n < thr)
                    if keep.any():
                        # |x| <= X_MAX keeps exp finite (Taichi compiles with fast math, where inf * 0
                        # is not NaN-safe); sigmoid(X_MAX) = 1 - 2e-35, i.e. 1 in float32
                        x = ti.min(ti.max(ti.select(inside, d2n, -d2n) / sigma, -X_MAX), X_MAX)
                        ex = ti.exp(x)
                        factor = 1.0 / (1.0 + ex)  # 1 - D
                        prod *= ti.select(keep, factor, 1.0)
                        if inside.any():
                            b0, b1, b2, zp = packet_persp(w0, w1, w2, td, base)
                            upd = inside & ((front < 0) | (zp < zbest))
                            if upd.any():
                                front = ti.select(upd, tile_faces[n], front)
                                zbest = ti.select(upd, zp, zbest)
                                fb0 = ti.select(upd, b0, fb0)
                                fb1 = ti.select(upd, b1, fb1)
                                fb2 = ti.select(upd, b2, fb2)
                        if ti.static(C > 0):
                            d = ti.select(factor > 0.0, ex * factor, 1.0)  # D = sigmoid(x)
                            u0 = ti.min(ti.max(w0, 0.0), 1.0)
                            u1 = ti.min(ti.max(w1, 0.0), 1.0)
                            u2 = ti.min(ti.max(w2, 0.0), 1.0)
                            inv_u = 1.0 / ti.max(u0 + u1 + u2, clip_eps)
                            c0, c1, c2, zc = packet_persp(u0 * inv_u, u1 * inv_u, u2 * inv_u, td, base)
                            cv = keep & (zc <= far)
                            zn = (far - zc) / (far - near)
                            up = cv & (zn > m)
                            if up.any():  # new running max: rescale the sums
                                m_new = ti.select(up, zn, m)
                                scale = ti.exp((m - m_new) / gamma)
                                wsum *= scale
                                acc = acc * ti.Vector([1.0] * CC, dt=f).outer_product(scale)
                                m = m_new
                            de = ti.select(cv, d * ti.exp((ti.min(zn, m) - m) / gamma), 0.0)
                            wsum += de
                            j = tile_faces[n]
                            col = load_colors(fc, b, j)  # [3, C'] corner colours
                            acc += (col.transpose() @ ti.Matrix.rows([de * c0, de * c1, de * c2]))
                ebg = ti.exp((eps - m) / gamma)
                wt = wsum + ebg
                for l in range(LANES):  # a runtime loop (dynamic lane index) keeps the kernel small
                    if valid[l]:
                        q = (b * height + py0 + l // PW) * width + px0 + l % PW
                        alpha[q] = 1.0 - prod[l]
                        packet_write_front(depth, face_id, bary_out, q, l, front, zbest, fb0, fb1, fb2)
                        if ti.static(C > 0):
                            for c in ti.static(range(C)):
                                rgb[q * CC + c] = (acc[c, l] + ebg[l] * bg[c]) / wt[l]
                            m_out[q] = m[l]
                            w_out[q] = wt[l]

    @ti.func
    def packet_lanes(b, pr, pc, i_lo, i_hi, j_lo, j_hi, height, width):
        """Lanes of the image-aligned packet (pr, pc) (pixels [PW pc, PW pc + PW) x [PW pr, ...))
        clipped to a face's pixel rectangle: pixel centres, validity and flat pixel indices
        (invalid lanes point at a valid pixel of the rectangle)."""
        pxv = V(0.0)
        pyv = V(0.0)
        valid = I(0)
        qv = I(0)
        for l in ti.static(range(LANES)):
            px = pc * PW + l % PW
            py = pr * PW + l // PW
            pxv[l] = ti.cast(px, f) + 0.5
            pyv[l] = ti.cast(py, f) + 0.5
            valid[l] = 1 if (px >= i_lo and px <= i_hi and py >= j_lo and py <= j_hi) else 0
            qv[l] = (b * height + ti.min(ti.max(py, j_lo), j_hi)) * width + ti.min(ti.max(px, i_lo), i_hi)
        return pxv, pyv, valid > 0, qv

    @ti.func
    def gather(arr: ti.template(), qv, stride, offset):
        """Per lane arr[qv * stride + offset] (float). A runtime loop over the lanes (dynamic
        indexing) keeps the kernels small: they compile several times faster than unrolled."""
        out = V(0.0)
        for l in range(LANES):
            out[l] = arr[qv[l] * stride + offset]
        return out

    @ti.func
    def gather_i(arr: ti.template(), qv):
        out = I(0)
        for l in range(LANES):
            out[l] = arr[qv[l]]
        return out

    @ti.func
    def closest_edge(inside, l0, l1, l2, s0, s1, s2):
        """Per lane index of the edge holding the closest boundary point (lowest on ties)."""
        c0 = ti.select(inside, l0, s0)
        c1 = ti.select(inside, l1, s1)
        c2 = ti.select(inside, l2, s2)
        k = I(0)
        sel = c1 < c0
        k = ti.select(sel, 1, k)
        cm = ti.select(sel, c1, c0)
        k = ti.select(c2 < cm, 2, k)
        return k

    @ti.func
    def dist_grad_lanes(gd2, k, t0, t1, t2, rx0, ry0, rx1, ry1, rx2, ry2):
        """d(d2)/d(corner x, y) times gd2 per lane, for the closest edge k: six lane vectors
        (gx0, gy0, gx1, gy1, gx2, gy2). For the edge a -> b with closest point a + t (b - a) and
        r = p - q: d/da = -2 r (1 - t), d/db = -2 r t (t is stationary or clamped)."""
        ga0 = ti.select(k == 0, -2.0 * gd2 * (1.0 - t0), 0.0)
        gb0 = ti.select(k == 0, -2.0 * gd2 * t0, 0.0)
        ga1 = ti.select(k == 1, -2.0 * gd2 * (1.0 - t1), 0.0)
        gb1 = ti.select(k == 1, -2.0 * gd2 * t1, 0.0)
        ga2 = ti.select(k == 2, -2.0 * gd2 * (1.0 - t2), 0.0)
        gb2 = ti.select(k == 2, -2.0 * gd2 * t2, 0.0)
        # edge 0: v0 -> v1, edge 1: v1 -> v2, edge 2: v2 -> v0
        return (ga0 * rx0 + gb2 * rx2, ga0 * ry0 + gb2 * ry2,
                gb0 * rx0 + ga1 * rx1, gb0 * ry0 + ga1 * ry1,
                gb1 * rx1 + ga2 * rx2, gb1 * ry1 + ga2 * ry2)  # fmt: skip

    @ti.func
    def bary_grad_lanes(gw0, gw1, gw2, w0, w1, w2, pxv, pyv, td: ti.template(), base):
        """Pull per-lane gradients of the screen barycentrics back to the corners' x, y."""
        ia = td[base + R_INV_A2]
        ax, ay = td[base + R_X0] - pxv, td[base + R_X0 + 1] - pyv
        bx, by = td[base + R_X0 + 2] - pxv, td[base + R_X0 + 3] - pyv
        cx, cy = td[base + R_X0 + 4] - pxv, td[base + R_X0 + 5] - pyv
        dot = gw0 * w0 + gw1 * w1 + gw2 * w2
        ge0, ge1, ge2 = (gw0 - dot) * ia, (gw1 - dot) * ia, (gw2 - dot) * ia  # w.r.t. E_k
        # E_0 = cross(b, c), E_1 = cross(c, a), E_2 = cross(a, b) with a = v0 - p etc.
        return (-ge1 * cy + ge2 * by, ge1 * cx - ge2 * bx,
                ge0 * cy - ge2 * ay, -ge0 * cx + ge2 * ax,
                -ge0 * by + ge1 * ay, ge0 * bx - ge1 * ax)  # fmt: skip

    @ti.func
    def persp_grad_lanes(w0, w1, w2, gb0, gb1, gb2, gzp, td: ti.template(), base):
        """Pull per-lane gradients of the perspective-correct barycentrics and camera z back to the
        screen barycentrics and the corners' z: (gw0, gw1, gw2, gz0, gz1, gz2)."""
        z0, z1, z2 = td[base + R_Z0], td[base + R_Z0 + 1], td[base + R_Z0 + 2]
        q0, q1, q2 = w0 / z0, w1 / z1, w2 / z2
        big_q = q0 + q1 + q2
        inv = 1.0 / big_q
        dot = (gb0 * q0 + gb1 * q1 + gb2 * q2) * inv
        gq0 = (gb0 - dot) * inv - gzp * inv * inv
        gq1 = (gb1 - dot) * inv - gzp * inv * inv
        gq2 = (gb2 - dot) * inv - gzp * inv * inv
        return gq0 / z0, gq1 / z1, gq2 / z2, -gq0 * w0 / (z0 * z0), -gq1 * w1 / (z1 * z1), -gq2 * w2 / (z2 * z2)

    @ti.func
    def write_face_grads(grad_fv: ti.template(), grad_fc: ti.template(), b, j, gxy, gz, gcol):
        for kk in ti.static(range(3)):
            grad_fv[b, j, kk, 0] += gxy[kk, 0]
            grad_fv[b, j, kk, 1] += gxy[kk, 1]
            grad_fv[b, j, kk, 2] += gz[kk]
            if ti.static(C > 0):
                for c in ti.static(range(C)):
                    grad_fc[b, j, kk, c] += gcol[kk, c]

    @ti.kernel
    def softras_backward(
        fc: fc_t, fd: f1_t, fpx: i3_t, face_id: i1_t, pix: f1_t, flags: i3_t, grad_fv: fv_t, grad_fc: fc_t,
        height: ti.i32, width: ti.i32, s2: f, sigma: f, thr: f, gamma: f, far: f, near: f, clip_eps: f,
    ):  # fmt: skip
        # One thread per face, looping over the image-aligned PW x PW packets its pixel rectangle
        # touches; packets without any gradient (flags) are skipped at once. Per-pixel record
        # pix [B*H*W, K]: (1 - alpha) * grad alpha, grad depth and, with colours, the softmax
        # maximum m, 1 / W, grad rgb . rgb and grad rgb [C].
        K = K_SOFTRAS
        ti.loop_config(block_dim=4)
        for b, j in ti.ndrange(grad_fv.shape[0], grad_fv.shape[1]):
            i_lo, i_hi, j_lo, j_hi = fpx[b, j, 0], fpx[b, j, 1], fpx[b, j, 2], fpx[b, j, 3]
            if i_lo <= i_hi:
                base = (b * grad_fv.shape[1] + j) * RECORD
                xmin, xmax, ymin, ymax = fd[base + R_XMIN], fd[base + R_XMAX], fd[base + R_YMIN], fd[base + R_YMAX]
                col = load_colors(fc, b, j)
                gx0, gy0, gx1, gy1, gx2, gy2 = V(0.0), V(0.0), V(0.0), V(0.0), V(0.0), V(0.0)
                gz0, gz1, gz2 = V(0.0), V(0.0), V(0.0)
                gcol = ti.Matrix.zero(f, 3, CC)
                for pr in range(j_lo // PW, j_hi // PW + 1):
                    for pc in range(i_lo // PW, i_hi // PW + 1):
                        if flags[b, pr, pc] == 0:
                            continue
                        pxv, pyv, valid, qv = packet_lanes(b, pr, pc, i_lo, i_hi, j_lo, j_hi, height, width)
                        valid &= (pxv >= xmin) & (pxv <= xmax) & (pyv >= ymin) & (pyv <= ymax)
                        grad_a = gather(pix, qv, K, 0)
                        is_front = gather_i(face_id, qv) == j
                        need = valid
                        if ti.static(C == 0):
                            # nothing flows back through lanes with saturated alpha (or no alpha
                            # gradient) unless this face is the z-buffer's (depth gradient)
                            need &= (grad_a != 0.0) | is_front
                        if not need.any():
                            continue
                        w0, w1, w2, inside, l0, l1, l2, sd0, sd1, sd2, t0, t1, t2, rx0, ry0, rx1, ry1, rx2, ry2 = (
                            packet_edges(pxv, pyv, fd, base))  # fmt: skip
                        d2n = ti.select(inside, ti.min(ti.min(l0, l1), l2), ti.min(ti.min(sd0, sd1), sd2)) * s2
                        act = need & (inside | (d2n < thr))
                        if not act.any():
                            continue
                        sgn = ti.select(inside, 1.0, -1.0)
                        x = ti.min(ti.max(sgn * d2n / sigma, -X_MAX), X_MAX)
                        d = 1.0 / (1.0 + ti.exp(-x))
                        # alpha = 1 - prod(1 - D_i): d alpha / d x_j = (1 - alpha) * D_j
                        gx = grad_a * d
                        gw0, gw1, gw2 = V(0.0), V(0.0), V(0.0)
                        if ti.static(C > 0):
                            dm = 1.0 / (1.0 + ti.exp(x))
                            u0 = ti.min(ti.max(w0, 0.0), 1.0)
                            u1 = ti.min(ti.max(w1, 0.0), 1.0)
                            u2 = ti.min(ti.max(w2, 0.0), 1.0)
                            usum = u0 + u1 + u2
                            inv_u = 1.0 / ti.max(usum, clip_eps)
                            wc0, wc1, wc2 = u0 * inv_u, u1 * inv_u, u2 * inv_u
                            bc0, bc1, bc2, zc = packet_persp(wc0, wc1, wc2, fd, base)
                            zn = (far - zc) / (far - near)
                            m = gather(pix, qv, K, 2)
                            e = ti.exp((ti.min(zn, m) - m) / gamma)
                            # faces far behind the front (e = 0: most back faces) get no colour gradient
                            cv = act & (zc <= far) & (e > 0.0)
                            if cv.any():
                                inv_wt = gather(pix, qv, K, 3)
                                dot = -gather(pix, qv, K, 4)  # becomes sum_c grad_c (C_jc - rgb_c)
                                gb0, gb1, gb2 = V(0.0), V(0.0), V(0.0)
                                for c in ti.static(range(C)):
                                    cj = bc0 * col[0, c] + bc1 * col[1, c] + bc2 * col[2, c]
                                    gi = gather(pix, qv, K, 5 + c)
                                    dot += gi * cj
                                    gcj = ti.select(cv, gi * d * e * inv_wt, 0.0)  # d rgb_c / d C_jc
                                    gcol[0, c] += (bc0 * gcj).sum()
                                    gcol[1, c] += (bc1 * gcj).sum()
                                    gcol[2, c] += (bc2 * gcj).sum()
                                    gb0 += gcj * col[0, c]
                                    gb1 += gcj * col[1, c]
                                    gb2 += gcj * col[2, c]
                                gx += ti.select(cv, dot * e * inv_wt * d * dm, 0.0)
                                gzn = ti.select(cv, dot * d * e * inv_wt / gamma, 0.0)
                                gwc0, gwc1, gwc2, gzc0, gzc1, gzc2 = persp_grad_lanes(
                                    wc0, wc1, wc2, gb0, gb1, gb2, -gzn / (far - near), fd, base)  # fmt: skip
                                gz0 += ti.select(cv, gzc0, 0.0)
                                gz1 += ti.select(cv, gzc1, 0.0)
                                gz2 += ti.select(cv, gzc2, 0.0)
                                # wc = clamp(w, 0, 1) / max(sum, clip_eps)
                                big = usum >= clip_eps
                                dotc = gwc0 * wc0 + gwc1 * wc1 + gwc2 * wc2
                                gu0 = ti.select(big, (gwc0 - dotc) / usum, gwc0 / clip_eps)
                                gu1 = ti.select(big, (gwc1 - dotc) / usum, gwc1 / clip_eps)
                                gu2 = ti.select(big, (gwc2 - dotc) / usum, gwc2 / clip_eps)
                                gw0 += ti.select(cv & (w0 >= 0.0) & (w0 <= 1.0), gu0, 0.0)
                                gw1 += ti.select(cv & (w1 >= 0.0) & (w1 <= 1.0), gu1, 0.0)
                                gw2 += ti.select(cv & (w2 >= 0.0) & (w2 <= 1.0), gu2, 0.0)
                        front = act & is_front
                        if front.any():
                            zero = V(0.0)
                            gwd0, gwd1, gwd2, gzd0, gzd1, gzd2 = persp_grad_lanes(
                                w0, w1, w2, zero, zero, zero, gather(pix, qv, K, 1), fd, base)  # fmt: skip
                            gw0 += ti.select(front, gwd0, 0.0)
                            gw1 += ti.select(front, gwd1, 0.0)
                            gw2 += ti.select(front, gwd2, 0.0)
                            gz0 += ti.select(front, gzd0, 0.0)
                            gz1 += ti.select(front, gzd1, 0.0)
                            gz2 += ti.select(front, gzd2, 0.0)
                        k = closest_edge(inside, l0, l1, l2, sd0, sd1, sd2)
                        gd2 = ti.select(act, gx * sgn * s2 / sigma, 0.0)
                        a0, a1, a2, a3, a4, a5 = dist_grad_lanes(gd2, k, t0, t1, t2, rx0, ry0, rx1, ry1, rx2, ry2)
                        c0, c1, c2, c3, c4, c5 = bary_grad_lanes(gw0, gw1, gw2, w0, w1, w2, pxv, pyv, fd, base)
                        gx0 += a0 + c0
                        gy0 += a1 + c1
                        gx1 += a2 + c2
                        gy1 += a3 + c3
                        gx2 += a4 + c4
                        gy2 += a5 + c5
                gxy = ti.Matrix([[gx0.sum(), gy0.sum()], [gx1.sum(), gy1.sum()], [gx2.sum(), gy2.sum()]])
                write_face_grads(grad_fv, grad_fc, b, j, gxy, ti.Vector([gz0.sum(), gz1.sum(), gz2.sum()]), gcol)

    # --------------------------------------------------------------------------------------- dibr / hard
    @ti.kernel
    def zbuf_forward(
        fc: fc_t, offsets: i1_t, tile_faces: i1_t, td: f1_t, bg: f1_t,
        rgb: f1_t, alpha: f1_t, depth: f1_t, face_id: i1_t, bary_out: f1_t,
        prod_out: f1_t, nzero_out: i1_t, last_out: i1_t,
        batch: ti.i32, height: ti.i32, width: ti.i32, tile: ti.i32, ntx: ti.i32, nty: ti.i32,
        s2: f, inv_delta: f, knum: ti.i32,
    ):  # fmt: skip
        npk = tile // PW
        ti.loop_config(block_dim=4)
        for b, ty, tx, k in ti.ndrange(batch, nty, ntx, npk * npk):
            px0, py0, pxv, pyv, x_lo, x_hi, y_lo, y_hi, valid = packet_setup(b, ty, tx, k, tile, height, width)
            if valid.any():
                t_id = (b * nty + ty) * ntx + tx
                front = I(-1)
                zbest = V(0.0)
                fb0, fb1, fb2 = V(0.0), V(0.0), V(0.0)
                prod = V(1.0)
                nzero = I(0)
                ncand = I(0)
                last = I(-1)
                for n in range(offsets[t_id], offsets[t_id + 1]):
                    base = n * RECORD
                    xmin, xmax = td[base + R_XMIN], td[base + R_XMAX]
                    ymin, ymax = td[base + R_YMIN], td[base + R_YMAX]
                    if xmin > x_hi or xmax < x_lo or ymin > y_hi or ymax < y_lo:
                        continue
                    j = tile_faces[n]
                    w0, w1, w2, inside, d2 = packet_geom(pxv, pyv, td, base)
                    if inside.any():
                        b0, b1, b2, zp = packet_persp(w0, w1, w2, td, base)
                        upd = inside & ((front < 0) | (zp < zbest))
                        front = ti.select(upd, j, front)
                        zbest = ti.select(upd, zp, zbest)
                        fb0 = ti.select(upd, b0, fb0)
                        fb1 = ti.select(upd, b1, fb1)
                        fb2 = ti.select(upd, b2, fb2)
                    if ti.static(mode == "dibr"):
                        # Soft-mask candidates: faces whose grown bbox holds the pixel, the first knum
                        # in face order. Only uncovered pixels use the mask; for them front stays -1.
                        cand = ((front < 0) & (ncand < knum) & (pxv >= xmin) & (pxv <= xmax)
                                & (pyv >= ymin) & (pyv <= ymax))  # fmt: skip
                        if cand.any():
                            ncand += ti.select(cand, 1, 0)
                            last = ti.select(cand, j, last)
                            factor = 1.0 - ti.exp(-d2 * s2 * inv_delta)
                            nzero += ti.select(cand & (factor == 0.0), 1, 0)
                            prod *= ti.select(cand & (factor != 0.0), factor, 1.0)
                for l in range(LANES):  # a runtime loop (dynamic lane index) keeps the kernel small
                    if valid[l]:
                        q = (b * height + py0 + l // PW) * width + px0 + l % PW
                        packet_write_front(depth, face_id, bary_out, q, l, front, zbest, fb0, fb1, fb2)
                        if ti.static(mode == "dibr"):
                            if front[l] >= 0:
                                alpha[q] = 1.0
                                for c in ti.static(range(C)):
                                    rgb[q * CC + c] = (fb0[l] * fc[b, front[l], 0, c] + fb1[l] * fc[b, front[l], 1, c]
                                                       + fb2[l] * fc[b, front[l], 2, c])  # fmt: skip
                            else:
                                alpha[q] = 1.0 - ti.select(nzero[l] > 0, 0.0, prod[l])
                                for c in ti.static(range(C)):
                                    rgb[q * CC + c] = bg[c]
                            prod_out[q] = prod[l]
                            nzero_out[q] = nzero[l]
                            last_out[q] = last[l]
                        else:
                            alpha[q] = ti.cast(front[l] >= 0, f)

    @ti.kernel
    def dibr_backward(
        fc: fc_t, fd: f1_t, fpx: i3_t, face_id: i1_t, nzero_out: i1_t, last_out: i1_t,
        pix: f1_t, flags: i3_t, grad_fv: fv_t, grad_fc: fc_t, height: ti.i32, width: ti.i32, s2: f, inv_delta: f,
    ):  # fmt: skip
        # Per-pixel record pix [B*H*W, K]: grad alpha, grad depth, the soft mask's product of the
        # non-zero factors, grad rgb [C]; packets without any gradient (flags) are skipped.
        K = K_DIBR
        ti.loop_config(block_dim=4)
        for b, j in ti.ndrange(grad_fv.shape[0], grad_fv.shape[1]):
            i_lo, i_hi, j_lo, j_hi = fpx[b, j, 0], fpx[b, j, 1], fpx[b, j, 2], fpx[b, j, 3]
            if i_lo <= i_hi:
                base = (b * grad_fv.shape[1] + j) * RECORD
                xmin, xmax, ymin, ymax = fd[base + R_XMIN], fd[base + R_XMAX], fd[base + R_YMIN], fd[base + R_YMAX]
                col = load_colors(fc, b, j)
                gx0, gy0, gx1, gy1, gx2, gy2 = V(0.0), V(0.0), V(0.0), V(0.0), V(0.0), V(0.0)
                gz0, gz1, gz2 = V(0.0), V(0.0), V(0.0)
                gcol = ti.Matrix.zero(f, 3, CC)
                for pr in range(j_lo // PW, j_hi // PW + 1):
                    for pc in range(i_lo // PW, i_hi // PW + 1):
                        if flags[b, pr, pc] == 0:
                            continue
                        pxv, pyv, valid, qv = packet_lanes(b, pr, pc, i_lo, i_hi, j_lo, j_hi, height, width)
                        fid = gather_i(face_id, qv)
                        fg = valid & (fid == j)
                        ga = gather(pix, qv, K, 0)
                        bgm = (valid & (fid < 0) & (ga != 0.0) & (pxv >= xmin) & (pxv <= xmax) & (pyv >= ymin)
                               & (pyv <= ymax) & (j <= gather_i(last_out, qv)))  # fmt: skip
                        if not (fg.any() or bgm.any()):
                            continue
                        w0, w1, w2, inside, l0, l1, l2, sd0, sd1, sd2, t0, t1, t2, rx0, ry0, rx1, ry1, rx2, ry2 = (
                            packet_edges(pxv, pyv, fd, base))  # fmt: skip
                        gw0, gw1, gw2 = V(0.0), V(0.0), V(0.0)
                        if fg.any():
                            # foreground: rgb = sum_k b_k c_k, depth = 1 / Q (perspective-correct)
                            b0, b1, b2, _zp = packet_persp(w0, w1, w2, fd, base)
                            # Lanes of the packet outside this face can have sum_k w_k / z_k = 0 (inf / NaN
                            # barycentrics); a 0 gradient times inf would still be NaN, so drop them here.
                            b0 = ti.select(fg, b0, 0.0)
                            b1 = ti.select(fg, b1, 0.0)
                            b2 = ti.select(fg, b2, 0.0)
                            gb0, gb1, gb2 = V(0.0), V(0.0), V(0.0)
                            for c in ti.static(range(C)):
                                gi = ti.select(fg, gather(pix, qv, K, 3 + c), 0.0)
                                gcol[0, c] += (b0 * gi).sum()
                                gcol[1, c] += (b1 * gi).sum()
                                gcol[2, c] += (b2 * gi).sum()
                                gb0 += gi * col[0, c]
                                gb1 += gi * col[1, c]
                                gb2 += gi * col[2, c]
                            gw0, gw1, gw2, gzz0, gzz1, gzz2 = persp_grad_lanes(
                                w0, w1, w2, gb0, gb1, gb2, gather(pix, qv, K, 1), fd, base)  # fmt: skip
                            gw0 = ti.select(fg, gw0, 0.0)
                            gw1 = ti.select(fg, gw1, 0.0)
                            gw2 = ti.select(fg, gw2, 0.0)
                            gz0 += ti.select(fg, gzz0, 0.0)
                            gz1 += ti.select(fg, gzz1, 0.0)
                            gz2 += ti.select(fg, gzz2, 0.0)
                        gd2 = V(0.0)
                        if bgm.any():
                            # uncovered: alpha = 1 - prod(1 - p_i), p_j = exp(-d2n / delta)
                            d2 = ti.min(ti.min(sd0, sd1), sd2)
                            pj = ti.exp(-d2 * s2 * inv_delta)
                            factor = 1.0 - pj
                            nz = gather_i(nzero_out, qv)
                            prod = gather(pix, qv, K, 2)
                            excl = ti.select(factor == 0.0, ti.select(nz == 1, prod, 0.0),
                                             ti.select(nz == 0, prod / ti.select(factor == 0.0, 1.0, factor), 0.0))  # fmt: skip
                            gd2 = ti.select(bgm, -ga * excl * pj * inv_delta * s2, 0.0)
                        k = closest_edge(inside, l0, l1, l2, sd0, sd1, sd2)
                        a0, a1, a2, a3, a4, a5 = dist_grad_lanes(gd2, k, t0, t1, t2, rx0, ry0, rx1, ry1, rx2, ry2)
                        c0, c1, c2, c3, c4, c5 = bary_grad_lanes(gw0, gw1, gw2, w0, w1, w2, pxv, pyv, fd, base)
                        gx0 += a0 + c0
                        gy0 += a1 + c1
                        gx1 += a2 + c2
                        gy1 += a3 + c3
                        gx2 += a4 + c4
                        gy2 += a5 + c5
                gxy = ti.Matrix([[gx0.sum(), gy0.sum()], [gx1.sum(), gy1.sum()], [gx2.sum(), gy2.sum()]])
                write_face_grads(grad_fv, grad_fc, b, j, gxy, ti.Vector([gz0.sum(), gz1.sum(), gz2.sum()]), gcol)

    if mode == "softras":
        return softras_forward, softras_backward
    if mode == "dibr":
        return zbuf_forward, dibr_backward
    if mode == "hard":
        return zbuf_forward, None
    raise ValueError(f"mode: expected 'softras', 'dibr' or 'hard', got {mode!r}")
