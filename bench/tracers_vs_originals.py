"""The wavefront tracers vs IDR's and DIST's tracers, on the same network and rays, in one run.

    PYTHONPATH=. python -m bench.tracers_vs_originals [--size 128] [--repeat 3] [--threads 1] [--quick]

The originals' algorithms are re-stated here in torch, step by step as their code does them (not
vendored): IDR's `RayTracing.forward` in eval mode (lioryariv/idr `code/model/ray_tracing.py`, DTU
settings: line_step_iters 3) and DIST's `SDFRenderer.render_depth` with `no_grad=True` and
`ray_marching_type="pyramid_recursive"` (B1ueber2y/DIST-Renderer `core/sdfrenderer/renderer.py`,
README defaults: march_step 100, ratio 1.5, threshold 5e-5, scales 4/2/1 with 3/3/rest steps), with
DIST's object transform set to the identity. Their point counts are the anchors (IDR: 26.9 per ray
on its geometric-init 8x256 network at 128x128 from distance 3, 40 degree fov; DIST: about 6 per
pixel). Networks: IDR's 8x256 (multires 6, Softplus(100), weight norm, IDR's geometric init of
radius 0.6 without the project's calibration); for DIST DeepSDF's 8x512 decoder fitted to a
procedural chair by DeepSDF's clamped loss (`bench.deepsdf_chair`; fitted once, cached in
outputs/cache/): a non-convex shape whose values, like a trained DeepSDF's, are known only within
the clamp (0.1) of the surface. A sphere is too easy an anchor (DIST needs 4.45 points per pixel on
a sphere-initialised MLP).

Rows: the original's algorithm; our exact port (`IDRMarcher` / `DISTMarcher`); the skipping tracer
(`SkipMarcher` with a `BoundGrid` built once from the network, its build shown separately: 32^3 for
IDR; 64^3 and `guess_cells=0.25` for DIST, the first sample a quarter cell before the grid's expected
surface); the whole library call doing the original's job (`march_field(gradient="none")`: no
differentiable step, no normals; for DIST with `min_sdf=True`, render_depth's third output, taken from
the march). "job" columns compare with the original: hit masks equal, depth differences on common
hits; the referee line checks, where the two disagree, which one found the first root of a dense
search (DIST's pyramid misses thin parts: its masks are not the reference).
"""

from __future__ import annotations

import argparse
import math

import torch

import taichi_sdf
from bench.common import interleaved, machine, print_table
from bench.deepsdf_chair import chair_target, fitted_chair_decoder
from taichi_sdf.cameras import camera as cameras
from taichi_sdf.implicit.marchers.base import FieldEvaluator
from taichi_sdf.implicit.marchers.bound_grid import BoundGrid
from taichi_sdf.implicit.marchers.dist import DISTMarcher
from taichi_sdf.implicit.marchers.idr import IDRMarcher
from taichi_sdf.implicit.marchers.skip import SkipMarcher
from taichi_sdf.implicit.wavefront import march_field
from taichi_sdf.models.sdf_net import SDFNetwork


class Counted:
    """A field that counts the points it is evaluated at (no grad)."""

    def __init__(self, fn):
        self.fn, self.points = fn, 0

    def __call__(self, x):
        self.points += x.shape[0]
        return self.fn(x)


# ---------------------------------------------------------------------------------------------
# IDR: RayTracing.forward, eval mode, one camera (batch 1), re-stated.


def sphere_intersection(cam, d, r):
    """IDR's rend_util.get_sphere_intersection for one camera: (t [N, 2], mask [N])."""
    oc = (d @ cam)  # [N]
    under = oc**2 - (cam @ cam - r**2)
    mask = under > 0
    s = torch.sqrt(under.clamp_min(0))
    t = torch.stack([-oc - s, -oc + s], -1) * mask[:, None]
    return t.clamp_min(0.0), mask


def idr_original(sdf, cam, d, r=1.0, eps=5e-5, line_search_step=0.5, line_step_iters=3, iters_max=10, n_steps=100,
                 n_secant=8):  # fmt: skip
    """IDR's tracer: sphere tracing from both chord ends, sampler + secant on the unconverged rays.
    Returns (mask [N], t [N])."""
    n = d.shape[0]
    inter, hit_sphere = sphere_intersection(cam, d, r)
    unf_s, unf_e = hit_sphere.clone(), hit_sphere.clone()
    acc_s = torch.where(hit_sphere, inter[:, 0], 0.0)
    acc_e = torch.where(hit_sphere, inter[:, 1], 0.0)
    pts_s, pts_e = cam + acc_s[:, None] * d, cam + acc_e[:, None] * d
    next_s, next_e = torch.zeros(n), torch.zeros(n)
    next_s[unf_s] = sdf(pts_s[unf_s])
    next_e[unf_e] = sdf(pts_e[unf_e])
    it = 0
    while True:
        cur_s = torch.where(unf_s, next_s, 0.0)
        cur_s[cur_s <= eps] = 0
        cur_e = torch.where(unf_e, next_e, 0.0)
        cur_e[cur_e <= eps] = 0
        unf_s = unf_s & (cur_s > eps)
        unf_e = unf_e & (cur_e > eps)
        if (unf_s.sum() == 0 and unf_e.sum() == 0) or it == iters_max:
            break
        it += 1
        acc_s, acc_e = acc_s + cur_s, acc_e - cur_e
        pts_s, pts_e = cam + acc_s[:, None] * d, cam + acc_e[:, None] * d
        next_s, next_e = torch.zeros(n), torch.zeros(n)
        next_s[unf_s] = sdf(pts_s[unf_s])
        next_e[unf_e] = sdf(pts_e[unf_e])
        np_s, np_e = next_s < 0, next_e < 0
        j = 0
        while (np_s.sum() > 0 or np_e.sum() > 0) and j < line_step_iters:
            acc_s[np_s] -= ((1 - line_search_step) / 2**j) * cur_s[np_s]
            pts_s[np_s] = (cam + acc_s[:, None] * d)[np_s]
            acc_e[np_e] += ((1 - line_search_step) / 2**j) * cur_e[np_e]
            pts_e[np_e] = (cam + acc_e[:, None] * d)[np_e]
            next_s[np_s] = sdf(pts_s[np_s])
            next_e[np_e] = sdf(pts_e[np_e])
            np_s, np_e = next_s < 0, next_e < 0
            j += 1
        unf_s = unf_s & (acc_s < acc_e)
        unf_e = unf_e & (acc_s < acc_e)
    mask = acc_s < acc_e
    sampler = unf_s
    if sampler.sum() > 0:  # ray_sampler, eval mode (secant on every ray with a sign change)
        idx = sampler.nonzero()[:, 0]
        lo, hi = acc_s[idx], acc_e[idx]
        z = lo[:, None] + torch.linspace(0, 1, n_steps)[None] * (hi - lo)[:, None]  # [M, S]
        p = cam + z[..., None] * d[idx][:, None]
        val = torch.cat([sdf(c) for c in p.reshape(-1, 3).split(100000)]).reshape(-1, n_steps)
        tmp = torch.sign(val) * torch.arange(n_steps, 0, -1).float()[None]
        ind = torch.argmin(tmp, -1)
        rows = torch.arange(len(idx))
        dist = z[rows, ind]
        net = val[rows, ind] < 0
        out = ~net  # object_mask is all False in eval: every ray takes its min-SDF sample
        dist[out] = z[out][torch.arange(int(out.sum())), torch.argmin(val[out], -1)]
        mask[idx[~net]] = False
        if net.sum() > 0:
            z_hi, f_hi = z[rows, ind][net], val[rows, ind][net]
            z_lo, f_lo = z[net][torch.arange(int(net.sum())), ind[net] - 1], val[net][torch.arange(int(net.sum())), ind[net] - 1]
            ds = d[idx[net]]
            zp = -f_lo * (z_hi - z_lo) / (f_hi - f_lo) + z_lo
            for _ in range(n_secant):
                fm = sdf(cam + zp[:, None] * ds)
                lo_m, hi_m = fm > 0, fm < 0
                z_lo[lo_m], f_lo[lo_m] = zp[lo_m], fm[lo_m]
                z_hi[hi_m], f_hi[hi_m] = zp[hi_m], fm[hi_m]
                zp = -f_lo * (z_hi - z_lo) / (f_hi - f_lo) + z_lo
            dist[net] = zp
        acc_s[idx] = dist
    return mask, acc_s


# ---------------------------------------------------------------------------------------------
# DIST: SDFRenderer.render_depth(no_grad=True, ray_marching_type="pyramid_recursive"), re-stated.


def dist_rays(K, R, pix):
    """Unit rays `[M, 3]` through pixel coordinates `pix [M, 2]` (DIST: R^T K^-1 [x, y, 1])."""
    homo = torch.cat([pix, torch.ones(len(pix), 1)], 1)
    r = homo @ torch.linalg.inv(K).T @ R
    return r / (r.norm(dim=1, keepdim=True) + 1e-12)


def unmap(x, valid, fill):
    """DIST's unmap_tensor_with_valid_mask: `[S, M, ...]` rows of the valid rays -> `[S, N, ...]`."""
    out = torch.full((len(x), len(valid), *x.shape[2:]), fill)
    out[:, valid] = x
    return out


def dist_original(sdf, K, R, cam, H, W, radius=1.0, thr=5e-5, ratio=1.5, clamp=0.1, march_step=100,
                  scales=(4, 2, 1), steps=(3, 3, -1), stages=None):  # fmt: skip
    """Returns (Zdepth [H*W] ray distance, 1e11 off the sphere; valid [H*W]; min_sdf_sample [H*W]).
    `stages`: a dict that receives the points `sdf` (a `Counted`) was evaluated at by each stage."""

    def stage(name):
        if stages is not None:
            stages[name] = sdf.points - sum(stages.values())


    def grid(h, w, stride):  # pixel centres of the blocks of one level, in full-resolution pixels
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        return torch.stack([xs, ys], -1).reshape(-1, 2).float() * stride + (stride - 1) / 2 + 0.5

    def sphere(d):
        ptq = d @ cam
        dist = (cam[None] - ptq[:, None] * d).norm(dim=1)
        valid = dist <= radius
        span = torch.where(valid, 2 * torch.sqrt((radius**2 - dist**2).clamp_min(0)), 0.0)
        cd = cam.norm()
        init_v = torch.sqrt(cd**2 - dist[valid] ** 2) - span[valid] / 2
        init = torch.full_like(dist, float(init_v.max()))
        init[valid] = init_v
        return init, valid, span, dist

    steps = list(steps)
    steps[-1] = march_step - sum(steps[:-1])
    levels = []  # finest first: (rays, index map to the next finer level, shape)
    h, w, stride = H, W, 1
    for i, s in enumerate(scales[::-1]):
        if i > 0:
            f = s // stride
            hn, wn = math.ceil(h / f), math.ceil(w / f)
            ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            index = ((ys // f) * wn + xs // f).reshape(-1)
            h, w, stride = hn, wn, s
        else:
            index = None
        levels.append((dist_rays(K, R, grid(h, w, stride)), index, (h, w)))
    d0 = levels[0][0]
    init0, valid0, span0, dist0 = sphere(d0)
    valids = [valid0]
    for lvl in levels[1:]:
        v = torch.zeros(lvl[2][0] * lvl[2][1])
        v.scatter_reduce_(0, lvl[1], valids[-1].float(), "amax")
        valids.append(v.bool())
    sdf_l = z_l = pts_l = None
    stage("start")
    for i in range(len(levels) - 1, -1, -1):
        d, index, _ = levels[i]
        valid = valids[i]
        n_steps = steps[len(levels) - 1 - i]
        init = sphere(d)[0] if i == len(levels) - 1 else z_l[-1]
        dv, iv = d[valid], init[valid]
        if i != 0:  # ray_marching_trivial: fixed steps on every valid ray
            mz = torch.zeros_like(iv)
            sl, zl, pl = [], [], []
            for _ in range(n_steps):
                p = cam + (iv + mz)[:, None] * dv
                f = sdf(p)
                pl.append(p)
                sl.append(f)
                mz = mz + f.clamp(-clamp, clamp) * ratio
                zl.append(mz)
            sl_n, pl_n, zl_n = (unmap(torch.stack(x), valid, fill) for x, fill in ((sl, 1.0), (pl, 0.0), (zl, 0.0)))
            zl_n = zl_n + init
            if sdf_l is not None:
                sl_n, pl_n, zl_n = torch.cat([sdf_l, sl_n]), torch.cat([pts_l, pl_n]), torch.cat([z_l, zl_n])
            sdf_l, pts_l, z_l = sl_n[:, index], pl_n[:, index], zl_n[:, index]
        else:  # ray_marching_recursive on the finest level, early exit
            _, _, span_v, _ = sphere(dv)
            maxb = sphere(dv)[0] + span_v  # get_maxbound_zdepth
            mz = torch.zeros_like(iv)
            unf = (mz + iv) < maxb
            sl, zl, pl = [], [], []
            for _ in range(n_steps):
                p_now = cam + (iv + mz)[unf][:, None] * dv[unf]
                f_now = sdf(p_now)
                p = torch.zeros(len(mz), 3)
                p[unf] = p_now
                pl.append(p)
                f = torch.zeros_like(mz)
                f[unf] = f_now
                mz = mz + f.clamp(-clamp, clamp) * ratio
                zl.append(mz)
                f[~unf] = 1.0
                sl.append(f)
                unf = unf & ((mz + iv) < maxb) & (f.abs() >= thr)
                if unf.sum() == 0:
                    break
            zl_t, sl_t, pl_t = torch.stack(zl), torch.stack(sl), torch.stack(pl)
            valid_render = ((zl_t[-1] + iv) < maxb) & (sl_t.abs().min(0)[0] <= thr)
            sdf_all = torch.cat([sdf_l[:, valid], sl_t])
            pts_all = torch.cat([pts_l[:, valid], pl_t])
            z_all = torch.cat([z_l[:, valid], zl_t + iv]) - init0[valid][None]
        stage(f"1/{scales[::-1][i]} resolution")
    # get_min_sdf_sample and the depth sample (min |sdf|), no_grad
    k = sdf_all.abs().argmin(0)
    cols = torch.arange(sdf_all.shape[1])
    min_sdf = sdf(pts_all[k, cols])  # the original decodes the network again at that sample
    stage("min-SDF decode")
    zd = z_all[k, cols] + (1 - ratio) * sdf_all[k, cols].clamp(-clamp, clamp)
    Z = torch.full((H * W,), 1e11)
    Z[valid0] = init0[valid0] + zd
    min_out = dist0 + thr - radius
    min_out[valid0] = min_sdf
    valid_out = valid0.clone()
    valid_out[valid0] = valid_render
    return Z, valid_out, min_out


# ---------------------------------------------------------------------------------------------


def compare(mask_a, t_a, mask_b, t_b):
    """(fraction of equal masks, |dt| median and 99th percentile and max on common hits, fraction of
    common hits with |dt| <= 1e-4)."""
    eq = float((mask_a == mask_b).float().mean())
    both = mask_a & mask_b
    dt = (t_a[both] - t_b[both]).abs()
    if len(dt) == 0:
        return eq, float("nan"), float("nan"), float("nan"), 1.0
    within = float((dt <= 1e-4).float().mean())
    return eq, float(dt.median()), float(dt.quantile(0.99)), float(dt.max()), within


@torch.no_grad()
def true_roots(sdf, o, d, t, half=5e-3, iters=40):
    """The zero crossing of `sdf` within `t +- half` of each ray `[M]`, by bisection (NaN where the
    sign does not change there): the reference both tracers' depths are measured against."""
    lo, hi = t - half, t + half
    f_lo = sdf(o + lo[:, None] * d)
    f_hi = sdf(o + hi[:, None] * d)
    ok = (f_lo > 0) & (f_hi < 0)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        pos = sdf(o + mid[:, None] * d) > 0
        lo, hi = torch.where(pos, mid, lo), torch.where(pos, hi, mid)
    return torch.where(ok, 0.5 * (lo + hi), float("nan"))


@torch.no_grad()
def first_roots(sdf, o, d, samples=512, radius=1.0):
    """(hit [M], t [M]) of the first outside -> inside crossing of `sdf` along the chords of rays `o, d`
    through the bounding sphere, from `samples` uniform samples and 30 bisections: the reference where
    the tracers disagree (a dense search; a part thinner than the spacing may still be missed)."""
    b = (o * d).sum(-1)
    disc = b * b - (o * o).sum(-1) + radius**2
    t0, t1 = (-b - disc.clamp_min(0).sqrt()).clamp_min(0), (-b + disc.clamp_min(0).sqrt()).clamp_min(0)
    z = t0[:, None] + torch.linspace(0, 1, samples)[None] * (t1 - t0)[:, None]  # [M, S]
    v = torch.cat([sdf(c) for c in (o[:, None] + z[..., None] * d[:, None]).reshape(-1, 3).split(65536)]).reshape(z.shape)
    neg = (v < 0) & (disc > 0)[:, None]
    hit = neg.any(1)
    j = torch.argmax(neg.int(), 1).clamp_min(1)
    rows = torch.arange(len(o))
    lo, hi = z[rows, j - 1], z[rows, j]
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        pos = sdf(o + mid[:, None] * d) > 0
        lo, hi = torch.where(pos, mid, lo), torch.where(pos, hi, mid)
    return hit, torch.where(hit, 0.5 * (lo + hi), float("nan"))


def referee(sdf, o, d, mask_o, t_o, mask_s, t_s):
    """Where the original and ours disagree (mask, or depth by more than 1e-3): how many pixels each one
    gets right (mask, and depth within 1e-3 of the dense first root), and so the share of all pixels
    each gets right, counting the pixels where both agree as right (the dense search runs only where
    they disagree)."""
    bad = (mask_o != mask_s) | (mask_o & mask_s & ((t_o - t_s).abs() > 1e-3))
    idx = bad.nonzero()[:, 0]
    if len(idx) == 0:
        return "no disagreements"
    hit, t = first_roots(sdf, o[idx], d[idx])

    def right(m, tt):
        return int(((m[idx] == hit) & (~hit | ((tt[idx] - t).abs() <= 1e-3))).sum())

    n, r_o, r_s = len(o), right(mask_o, t_o), right(mask_s, t_s)
    return (f"{len(idx)} pixels disagree; right (dense first root): original {r_o}, ours {r_s}; pixels right: "
            f"original {1 - (len(idx) - r_o) / n:.4f}, ours {1 - (len(idx) - r_s) / n:.4f}")  # fmt: skip


def grid_resolution(job, args):
    """The BoundGrid resolution of a job: `--grid`, else 32 for IDR and 64 for DIST (a DeepSDF shape's
    thin parts; one build is 64^3 points, amortised over the renders of an unchanged network)."""
    return args.grid or (32 if job == "IDR" else 64)


def depth_error(t, t_true):
    """99th percentile of |t - t_true| over rays with a reference root."""
    e = (t - t_true).abs()
    e = e[torch.isfinite(e)]
    return float(e.quantile(0.99)) if len(e) else float("nan")


def bench_job(job, sdf, params, cam, size, args):
    """(rows, notes) of one job (IDR or DIST) on the field `sdf` (points [M, 3] -> [M]) whose tensors
    are `params`, with the camera `cam`."""
    n = size * size
    c = cam.T_cam_world.inverse()[0, :3, 3].float()  # camera centre
    K, R = cam.K[0].float(), cam.T_cam_world[0, :3, :3].float()
    # DIST's rays from K and R (pixel centres at +0.5) are the camera's rays; every tracer gets these.
    pix = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="xy"), -1).reshape(-1, 2)
    d = dist_rays(K, R, pix.float() + 0.5).contiguous()
    o = c.expand(n, 3).contiguous()
    f = Counted(sdf)
    shape = None if job == "IDR" else (1, size, size)
    grid = BoundGrid(resolution=grid_resolution(job, args))
    if job == "IDR":  # sphere steps of f far from the surface (IDR's), secant steps within 0.01 of it
        skip = SkipMarcher(grid=grid, eps=5e-5, secant_below=0.01)
    else:  # DIST's step ratio and clamp (steps <= 1.5 f, <= 0.15), the 1.5 where the secant allows it; the
        # first sample a quarter cell before the grid's expected surface (DIST's own pyramid is a guess too)
        skip = SkipMarcher(grid=grid, eps=5e-5, secant_below=0.05, max_step_ratio=1.5, max_step=0.15,
                           guess_cells=args.guess_cells)  # fmt: skip
    port = IDRMarcher() if job == "IDR" else DISTMarcher()

    stages = {}

    @torch.no_grad()
    def original(stages=None):
        return idr_original(f, c, d) if job == "IDR" else dist_original(f, K, R, c, size, size, stages=stages)

    def build():
        return grid.refresh(f, params=params)

    def march(marcher):
        return marcher.march(FieldEvaluator(f, 65536, o.dtype), o, d, level=0.0, image_shape=shape)

    @torch.no_grad()
    def full():  # the whole library call for the job: no gradient step, no normals, no min-SDF, no polish
        return march_field(f, o, d, marcher=skip, image_shape=shape, gradient="none", polish_steps=0, normals=False,
                           min_sdf=False)  # fmt: skip

    @torch.no_grad()
    def full_min_sdf():  # DIST's render_depth also returns the min-|f| sample's value of every pixel
        return march_field(f, o, d, marcher=skip, image_shape=shape, gradient="none", polish_steps=0, normals=False,
                           min_sdf=True)  # fmt: skip

    fns = {"original": original, "port": lambda: march(port), "build": build, "skip": lambda: march(skip), "full": full}
    if job == "DIST":
        fns["full_min_sdf"] = full_min_sdf
    points, outs = {}, {}
    for k, fn in fns.items():
        f.points = 0
        outs[k] = fn(stages) if k == "original" else fn()
        points[k] = f.points / n
    timing = interleaved(fns, args.repeat)
    mask_o, depth_o = (outs["original"][0], outs["original"][1]) if job == "IDR" else (outs["original"][1], outs["original"][0])
    hits_o = mask_o.nonzero()[:, 0]
    t_true = torch.full((n,), float("nan"))
    t_true[hits_o] = true_roots(sdf, o[hits_o], d[hits_o], depth_o[hits_o])

    def row(label, key, res=None):
        ms, speed = timing[key][0] * 1e3, timing[key][1]
        if res is None:
            return [f"{job}: {label}", points[key], ms, speed, "", "", "", ""]
        eq, med, p99, mx, within = compare(mask_o, depth_o, res.hit, res.t)
        err = depth_error(torch.where(res.hit, res.t, float("nan")), t_true)
        return [f"{job}: {label}", points[key], ms, speed, f"{eq:.4f}", f"{med:.1e} / {p99:.1e} / {mx:.1e}", f"{within:.4f}", err]

    rows = [row("original algorithm (torch re-statement)", "original")]
    rows[0][-1] = depth_error(depth_o, t_true)
    rows.append(row("our port (IDRMarcher/DISTMarcher), march", "port", outs["port"]))
    res = grid_resolution(job, args)
    rows.append(row(f"SkipMarcher, grid {res}^3 built, march", "skip", outs["skip"]))
    rows.append(row('march_field(SkipMarcher, gradient="none", normals=False, min_sdf=False)', "full", outs["full"]))
    if job == "DIST":
        rows.append(row('march_field(SkipMarcher, gradient="none", normals=False, min_sdf=True)', "full_min_sdf",
                        outs["full_min_sdf"]))  # fmt: skip
    rows.append(row(f"BoundGrid {res}^3 build (once per network change)", "build"))
    last = "full_min_sdf" if job == "DIST" else "full"
    t_sum = timing[last][0] + timing["build"][0]
    rows.append([f"{job}: the whole call ({last}) + grid build", points[last] + points["build"], t_sum * 1e3,
                 timing["original"][0] / t_sum, "", "", "", ""])  # fmt: skip
    notes = [f"{job} anchor: the original needs {points['original']:.2f} points per ray"]
    last_out = outs["full_min_sdf"] if job == "DIST" else outs["full"]
    notes.append(f"{job} referee: " + referee(sdf, o, d, mask_o, depth_o, last_out.hit, last_out.t))
    if job == "DIST":
        notes.append(f"DIST grid: slope used {grid.slope:.2f}, occupancy {grid.occupancy:.3f}")
    if stages:
        notes[0] += " (" + ", ".join(f"{k} {v / n:.2f}" for k, v in stages.items() if k != "start") + ")"
    if job == "DIST":  # render_depth's third output: the min-|f| sample's value (ours from the march)
        m_o, m_s = outs["original"][2], outs["full_min_sdf"].min_sdf
        gap = m_s.abs() - m_o.abs()
        notes.append(f"DIST min-SDF sample: |ours| - |original's| median {float(gap.median()):.1e}, p99 "
                     f"{float(gap.quantile(0.99)):.1e}; |ours| <= |original's| + 1e-4 on "
                     f"{float((gap <= 1e-4).float().mean()):.4f} of the pixels")  # fmt: skip
    return rows, notes


@torch.no_grad()
def exact_chair_counts(cam, size, grid_res, guess_cells):
    """Points per pixel of DIST's algorithm and of the whole call on the chair's exact SDF (no network):
    what a perfectly trained decoder would cost, the check of the fitted network's anchor."""
    n = size * size
    c = cam.T_cam_world.inverse()[0, :3, 3].float()
    K, R = cam.K[0].float(), cam.T_cam_world[0, :3, :3].float()
    pix = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="xy"), -1).reshape(-1, 2)
    d = dist_rays(K, R, pix.float() + 0.5).contiguous()
    o = c.expand(n, 3).contiguous()
    f = Counted(chair_target())
    stages = {}
    _, valid, _ = dist_original(f, K, R, c, size, size, stages=stages)
    original = f.points / n
    grid = BoundGrid(resolution=grid_res).refresh(f)
    f.points = 0
    skip = SkipMarcher(grid=grid, eps=5e-5, secant_below=0.05, max_step_ratio=1.5, max_step=0.15, guess_cells=guess_cells)
    r = march_field(f, o, d, marcher=skip, gradient="none", polish_steps=0, normals=False, min_sdf=True)
    eq = float((r.hit == valid).float().mean())
    return (f"DIST on the chair's exact SDF (no network): the original {original:.2f} points per pixel ("
            + ", ".join(f"{k} {v / n:.2f}" for k, v in stages.items() if k != "start")
            + f"), the whole call {f.points / n:.2f} (+ grid {grid_res ** 3 / n:.2f}), masks equal {eq:.4f}; "
            f"{float(valid.float().mean()):.3f} of the pixels hit")  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grid", type=int, default=0, help="BoundGrid resolution (0: 32 for IDR, 64 for DIST)")
    ap.add_argument("--guess-cells", type=float, default=0.25,
                    help="DIST's SkipMarcher guess_cells (a negative value: off, the certified entry)")  # fmt: skip
    ap.add_argument("--jobs", default="IDR,DIST")
    ap.add_argument("--quick", action="store_true", help="64x64 rays, one timed round")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.repeat = 64, 1
    if args.guess_cells < 0:
        args.guess_cells = None
    torch.set_num_threads(args.threads)
    taichi_sdf.init(arch="cpu")
    torch.manual_seed(0)
    cam = cameras.look_at(torch.tensor([[0.0, 0.0, 3.0]]), width=args.size, height=args.size, fov_x_deg=40.0)
    print(f"machine: {machine()}; torch threads {args.threads}; {args.size}x{args.size} rays from distance 3, fov 40")
    rows, notes = [], []
    for job in args.jobs.split(","):
        if job == "IDR":
            net = SDFNetwork(hidden=256, n_layers=8, multires=6, skip_in=(4,), init_radius=0.6, calibrate_init=False)
            net.eval()
            sdf, params = net.sdf, list(net.parameters())
        else:
            decoder, sdf = fitted_chair_decoder()
            params = list(decoder.parameters())
        r, n = bench_job(job, sdf, params, cam, args.size, args)
        rows, notes = rows + r, notes + n
        if job == "DIST":
            notes.append(exact_chair_counts(cam, args.size, grid_resolution(job, args), args.guess_cells))
    print_table("Tracers vs the originals' algorithms (same network and rays; points per ray = field points / rays)",
                ["tracer", "points/ray", "ms (median)", "speed-up vs original (median per round)", "masks equal", "|dt| median / p99 / max",
                 "common hits |dt|<=1e-4", "p99 |t - true root|"], rows)  # fmt: skip
    print()
    for line in notes:
        print(line)


if __name__ == "__main__":
    main()
