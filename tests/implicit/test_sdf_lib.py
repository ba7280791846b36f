"""The `@ti.func` SDF library against its torch twin: values, VJPs (Taichi autodiff through the
KernelOp bridge), float64 gradcheck, and distances known by hand.

Compile time dominates, so the functions are grouped into three kernels (primitives, CSG,
transforms), each made once per dtype by a cached factory; every parameter comes from one 1-D
params tensor whose layout is spelled out below and shared by the kernel and the twin.
"""

import functools
import math

import pytest
import taichi as ti
import torch

from taichi_sdf.core.bridge import KernelOp
from taichi_sdf.kernels.dtypes import ti_float
from taichi_sdf.kernels.implicit import sdf_lib as sdf
from taichi_sdf.reference.implicit import sdf_lib as ref
from tests.helpers import assert_matches_twin

TOL = {torch.float32: 2e-5, torch.float64: 1e-12}
DTYPE_NAMES = {torch.float32: "f32", torch.float64: "f64"}


def _layout(*fields):
    """{name: (offset, size)} for parameters packed one after the other in a 1-D tensor."""
    out, o = {}, 0
    for name, size in fields:
        out[name] = (o, size)
        o += size
    return out


def _unpack(params, layout):
    """Twin side: slice the params tensor (0-d tensors for scalars) so autograd reaches it."""
    return {k: params[o] if n == 1 else params[o : o + n] for k, (o, n) in layout.items()}


def _pack(layout, **values):
    flat = [0.0] * sum(n for _, n in layout.values())
    for k, v in values.items():
        o, n = layout[k]
        flat[o : o + n] = [float(x) for x in (v if n > 1 else [v])]
    return flat


@ti.func
def _vec3(params: ti.template(), o: ti.template()):
    return ti.Vector([params[o], params[o + 1], params[o + 2]])


def _op(name, forward, *out_shape):
    """KernelOp `(points [N, 3], params [P]) -> [N, *out_shape]`, gradients by Taichi autodiff."""
    return KernelOp(
        name, forward, lambda pts, prm: (pts.new_empty(pts.shape[0], *out_shape),), input_names=("points", "params")
    )


def _pts_t(f):
    return ti.types.ndarray(dtype=f, ndim=2)


def _vec_t(f):
    return ti.types.ndarray(dtype=f, ndim=1)


# -- primitives ---------------------------------------------------------------------------------

PRIM = _layout(
    ("sphere_r", 1), ("box_b", 3), ("rbox_b", 3), ("rbox_r", 1), ("torus_R", 1), ("torus_r", 1),
    ("cap_a", 3), ("cap_b", 3), ("cap_r", 1), ("cyl_h", 1), ("cyl_r", 1), ("plane_n", 3), ("plane_d", 1),
)  # fmt: skip
PRIM_NAMES = ("sphere", "box", "round_box", "torus", "capsule", "cylinder", "plane")
PRIM_DEFAULT = dict(
    sphere_r=0.8, box_b=(1.0, 0.7, 0.5), rbox_b=(0.9, 0.6, 1.1), rbox_r=0.2, torus_R=1.2, torus_r=0.3,
    cap_a=(-0.5, -0.3, 0.2), cap_b=(0.6, 0.8, -0.4), cap_r=0.35, cyl_h=0.9, cyl_r=0.6,
    plane_n=(0.48, 0.6, 0.64), plane_d=-0.3,
)  # fmt: skip


@functools.cache
def primitives_op(dtype: str) -> KernelOp:
    """(points [N,3], params [23]) -> [N, 7]: one column per primitive, in PRIM_NAMES order."""
    f = ti_float(dtype)
    P = {k: o for k, (o, _) in PRIM.items()}

    @ti.kernel
    def forward(points: _pts_t(f), params: _vec_t(f), out: _pts_t(f)):
        for n in range(points.shape[0]):
            p = ti.Vector([points[n, 0], points[n, 1], points[n, 2]])
            out[n, 0] = sdf.sd_sphere(p, params[P["sphere_r"]])
            out[n, 1] = sdf.sd_box(p, _vec3(params, P["box_b"]))
            out[n, 2] = sdf.sd_round_box(p, _vec3(params, P["rbox_b"]), params[P["rbox_r"]])
            out[n, 3] = sdf.sd_torus(p, params[P["torus_R"]], params[P["torus_r"]])
            out[n, 4] = sdf.sd_capsule(
                p, _vec3(params, P["cap_a"]), _vec3(params, P["cap_b"]), params[P["cap_r"]]
            )
            out[n, 5] = sdf.sd_cylinder(p, params[P["cyl_h"]], params[P["cyl_r"]])
            out[n, 6] = sdf.sd_plane(p, _vec3(params, P["plane_n"]), params[P["plane_d"]])

    return _op("sdf_primitives", forward, 7)


def primitives(points, params):
    return primitives_op(DTYPE_NAMES[points.dtype])(points, params)


def primitives_twin(points, params):
    q = _unpack(params, PRIM)
    return torch.stack(
        [
            ref.sd_sphere(points, q["sphere_r"]),
            ref.sd_box(points, q["box_b"]),
            ref.sd_round_box(points, q["rbox_b"], q["rbox_r"]),
            ref.sd_torus(points, q["torus_R"], q["torus_r"]),
            ref.sd_capsule(points, q["cap_a"], q["cap_b"], q["cap_r"]),
            ref.sd_cylinder(points, q["cyl_h"], q["cyl_r"]),
            ref.sd_plane(points, q["plane_n"], q["plane_d"]),
        ],
        -1,
    )


def _prim_params(dtype, device, **overrides):
    return torch.tensor(_pack(PRIM, **{**PRIM_DEFAULT, **overrides}), dtype=dtype, device=device)


def _prim_points(dtype, device, n_random=64, seed=0):
    """Random points (inside and outside everything) plus points jittered around box corners and
    edge midpoints, round-box corners and cylinder rims, where the formulas switch branches."""
    g = torch.Generator().manual_seed(seed)
    pts = [torch.rand(n_random, 3, generator=g, dtype=torch.float64) * 5.0 - 2.5]
    signs = torch.tensor([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=torch.float64)
    for b in (PRIM_DEFAULT["box_b"], PRIM_DEFAULT["rbox_b"]):
        b = torch.tensor(b, dtype=torch.float64)
        pts.append(signs * b)  # corners
        for axis in range(3):  # the 4 edge midpoints along each axis: that coordinate zeroed
            edge = (signs * b)[signs[:, axis] > 0]
            edge[:, axis] = 0.0
            pts.append(edge)
    ang = torch.rand(8, generator=g, dtype=torch.float64) * 2 * math.pi
    r, h = PRIM_DEFAULT["cyl_r"], PRIM_DEFAULT["cyl_h"]
    pts.append(torch.stack([r * ang.cos(), h * torch.sign(ang - math.pi), r * ang.sin()], -1))
    pts = torch.cat(pts)
    near = pts[n_random:]
    # 0.03 jitter: near the features, yet far enough that f32 rounding cannot flip a branch.
    pts[n_random:] = near + 0.03 * torch.randn(near.shape, generator=g, dtype=torch.float64)
    return pts.to(dtype=dtype, device=device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_primitives_match_twin(device, dtype):
    points = _prim_points(dtype, device).requires_grad_()
    params = _prim_params(dtype, device).requires_grad_()
    assert_matches_twin(primitives, primitives_twin, (points, params), atol=TOL[dtype], rtol=1e-6)


def test_primitives_gradcheck(device):
    g = torch.Generator().manual_seed(1)
    points = torch.rand(6, 3, generator=g, dtype=torch.float64) * 4.0 - 2.0
    points[0] = torch.tensor([0.3, 0.1, -0.2])  # inside sphere, box, round box, cylinder
    points[1] = torch.tensor([1.25, 0.05, 0.1])  # inside the torus tube
    points = points.to(device).requires_grad_()
    params = _prim_params(torch.float64, device).requires_grad_()
    assert torch.autograd.gradcheck(primitives, (points, params), nondet_tol=1e-12)


def test_primitives_exact_distances(device):
    d = torch.float64
    params = _prim_params(
        d, device, sphere_r=0.5, box_b=(1.0, 2.0, 3.0), rbox_b=(1.0, 2.0, 3.0), rbox_r=0.5, torus_R=1.2,
        torus_r=0.3, cap_a=(0.0, 0.0, 0.0), cap_b=(0.0, 2.0, 0.0), cap_r=0.5, cyl_h=0.9, cyl_r=0.6,
        plane_n=(0.6, 0.0, 0.8), plane_d=-1.0,
    )  # fmt: skip
    pts = torch.tensor(
        [
            [1.2, -1.6, 0.0],  # |p| = 2
            [3.0, 0.0, 0.0],  # box face
            [2.0, 3.0, 0.0],  # box edge region (1 beyond x, 1 beyond y)
            [0.0, 0.0, 0.0],  # centre
            [1.2 + 0.3 + 1.0, 0.0, 0.0],  # torus, R + r + 1 on the x axis
            [0.0, 0.9 + 0.7, 0.3],  # cylinder cap, above the cap disk
            [0.6 + 3.0, -(0.9 + 4.0), 0.0],  # cylinder rim corner region (3, 4) away
            [1.5, 1.0, 0.0],  # capsule: 1.5 from the segment's midpoint, sideways
            [0.0, 4.0, 0.0],  # capsule: 2 beyond the end b
            [5.0, -2.0, 3.0],  # plane
        ],
        dtype=d,
        device=device,
    )
    out = primitives(pts, params)
    col = {name: out[:, j] for j, name in enumerate(PRIM_NAMES)}

    def close(x, y):
        torch.testing.assert_close(x, torch.tensor(y, dtype=d, device=device), atol=1e-12, rtol=0)

    close(col["sphere"][0], 1.5)
    close(col["sphere"][3], -0.5)
    close(col["box"][1], 2.0)
    close(col["box"][2], math.sqrt(2.0))
    close(col["box"][3], -1.0)
    close(col["round_box"][1], 2.0)  # faces are where the sharp box's are
    close(col["round_box"][2], math.sqrt(2 * 1.5**2) - 0.5)  # edge rounded with r = 0.5
    close(col["round_box"][3], -1.0)
    close(col["torus"][4], 1.0)
    close(col["torus"][3], math.hypot(1.2, 0.0) - 0.3)
    close(col["cylinder"][5], 0.7)
    close(col["cylinder"][6], 5.0)
    close(col["cylinder"][3], -0.6)
    close(col["capsule"][7], 1.0)
    close(col["capsule"][8], 1.5)
    close(col["plane"][9], 0.6 * 5.0 + 0.8 * 3.0 - 1.0)


def test_primitives_are_exact_sdfs(device):
    """Exact SDFs have |grad_p| = 1 almost everywhere (inside too); no NaN at singular points."""
    points = _prim_points(torch.float64, device, seed=2)[:64].requires_grad_()
    params = _prim_params(torch.float64, device)
    out = primitives(points, params)
    for j, name in enumerate(PRIM_NAMES):
        (g,) = torch.autograd.grad(out[:, j].sum(), points, retain_graph=True)
        torch.testing.assert_close(g.norm(dim=-1), torch.ones_like(g[:, 0]), atol=1e-12, rtol=0, msg=name)
    # The centre of the sphere, the torus axis, the box interior: finite (sub)gradients.
    singular = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.4, 0.0]], dtype=torch.float64, device=device)
    singular.requires_grad_()
    (g,) = torch.autograd.grad(primitives(singular, params).sum(), singular)
    assert torch.isfinite(g).all()


# -- CSG: a = sphere around c, b = box; k is the smooth blend width -----------------------------

CSG = _layout(("c", 3), ("r", 1), ("b", 3), ("k", 1))
CSG_NAMES = (
    "a", "b", "union", "intersection", "subtraction",
    "smooth_union", "smooth_intersection", "smooth_subtraction",
)  # fmt: skip


@functools.cache
def csg_op(dtype: str) -> KernelOp:
    """(points [N,3], params [8]) -> [N, 8]: a, b and the six operators, in CSG_NAMES order."""
    f = ti_float(dtype)
    P = {k: o for k, (o, _) in CSG.items()}

    @ti.kernel
    def forward(points: _pts_t(f), params: _vec_t(f), out: _pts_t(f)):
        for n in range(points.shape[0]):
            p = ti.Vector([points[n, 0], points[n, 1], points[n, 2]])
            k = params[P["k"]]
            a = sdf.sd_sphere(sdf.translate(p, _vec3(params, P["c"])), params[P["r"]])
            b = sdf.sd_box(p, _vec3(params, P["b"]))
            out[n, 0] = a
            out[n, 1] = b
            out[n, 2] = sdf.op_union(a, b)
            out[n, 3] = sdf.op_intersection(a, b)
            out[n, 4] = sdf.op_subtraction(a, b)
            out[n, 5] = sdf.op_smooth_union(a, b, k)
            out[n, 6] = sdf.op_smooth_intersection(a, b, k)
            out[n, 7] = sdf.op_smooth_subtraction(a, b, k)

    return _op("sdf_csg", forward, 8)


def csg(points, params):
    return csg_op(DTYPE_NAMES[points.dtype])(points, params)


def csg_twin(points, params):
    q = _unpack(params, CSG)
    a = ref.sd_sphere(ref.translate(points, q["c"]), q["r"])
    b = ref.sd_box(points, q["b"])
    k = q["k"]
    return torch.stack(
        [
            a, b, ref.op_union(a, b), ref.op_intersection(a, b), ref.op_subtraction(a, b),
            ref.op_smooth_union(a, b, k), ref.op_smooth_intersection(a, b, k), ref.op_smooth_subtraction(a, b, k),
        ],
        -1,
    )  # fmt: skip


def _csg_params(dtype, device, k=0.4):
    return torch.tensor(_pack(CSG, c=(0.7, 0.2, -0.1), r=0.9, b=(0.8, 0.6, 0.7), k=k), dtype=dtype, device=device)


def _csg_points(dtype, device, n, seed, margin=0.0):
    """Random points; with margin > 0 only those away from every kink of the operators (a = b,
    a = -b, and the smooth ops' clamp boundaries |a -/+ b| = k) and of the sphere and box."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(40 * n if margin else n, 3, generator=g, dtype=torch.float64) * 4.0 - 2.0
    if margin:
        out = csg_twin(pts, _csg_params(torch.float64, "cpu"))
        a, b, k = out[:, 0], out[:, 1], 0.4
        q = pts.abs() - torch.tensor([0.8, 0.6, 0.7], dtype=torch.float64)
        qs = q.sort(-1).values
        ok = ((a - b).abs() > margin) & ((a + b).abs() > margin)
        ok &= (((a - b).abs() - k).abs() > margin) & (((a + b).abs() - k).abs() > margin)
        ok &= (q.abs() > margin).all(-1) & (qs[:, 2] - qs[:, 1] > margin)
        pts = pts[ok][:n]
        assert len(pts) == n
    return pts.to(dtype=dtype, device=device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_csg_match_twin(device, dtype):
    points = _csg_points(dtype, device, 96, seed=3).requires_grad_()
    params = _csg_params(dtype, device).requires_grad_()
    assert_matches_twin(csg, csg_twin, (points, params), atol=TOL[dtype], rtol=1e-6)


def test_csg_gradcheck(device):
    points = _csg_points(torch.float64, device, 8, seed=4, margin=0.05).requires_grad_()
    params = _csg_params(torch.float64, device).requires_grad_()
    assert torch.autograd.gradcheck(csg, (points, params), nondet_tol=1e-12)


def test_csg_exact(device):
    k = 0.4
    points = _csg_points(torch.float64, device, 400, seed=5)
    out = csg(points, _csg_params(torch.float64, device, k=k))
    a, b = out[:, 0], out[:, 1]
    col = {name: out[:, j] for j, name in enumerate(CSG_NAMES)}
    close = functools.partial(torch.testing.assert_close, atol=1e-12, rtol=0)
    close(col["union"], torch.minimum(a, b))
    close(col["intersection"], torch.maximum(a, b))
    close(col["subtraction"], torch.maximum(a, -b))
    far, near = (a - b).abs() >= k, (a - b).abs() < k
    assert far.sum() > 50 and near.sum() > 20  # both regimes are exercised
    # Outside the blend band the smooth ops are the hard ones; inside it they differ by <= k/4.
    close(col["smooth_union"][far], torch.minimum(a, b)[far])
    close(col["smooth_intersection"][far], torch.maximum(a, b)[far])
    far_sub = (a + b).abs() >= k
    close(col["smooth_subtraction"][far_sub], torch.maximum(a, -b)[far_sub])
    gap = torch.minimum(a, b) - col["smooth_union"]
    assert (gap >= -1e-12).all() and (gap[near] > 0).all() and (gap <= k / 4 + 1e-12).all()
    gap = col["smooth_intersection"] - torch.maximum(a, b)
    assert (gap >= -1e-12).all() and (gap <= k / 4 + 1e-12).all()
    # translate: the sphere is centred at c, so c + (0, 2, 0) is 2 - r from its surface.
    c = torch.tensor([[0.7, 2.2, -0.1]], dtype=torch.float64, device=device)
    close(csg(c, _csg_params(torch.float64, device))[0, 0], torch.tensor(2.0 - 0.9, dtype=torch.float64).to(device))


# -- transforms ---------------------------------------------------------------------------------

XF = _layout(("offset", 3), ("R", 9), ("axis_angle", 3), ("s", 1))
XF_NAMES = ("translate", "rotate", "rotate_axis_angle", "scale_point")


@functools.cache
def transforms_op(dtype: str) -> KernelOp:
    """(points [N,3], params [16]) -> [N, 4, 3]: the point after each transform, in XF_NAMES order."""
    f = ti_float(dtype)
    P = {k: o for k, (o, _) in XF.items()}

    @ti.kernel
    def forward(points: _pts_t(f), params: _vec_t(f), out: ti.types.ndarray(dtype=f, ndim=3)):
        for n in range(points.shape[0]):
            p = ti.Vector([points[n, 0], points[n, 1], points[n, 2]])
            R = ti.Matrix([[params[P["R"] + 3 * i + j] for j in ti.static(range(3))] for i in ti.static(range(3))])
            q = ti.Matrix.rows(
                [
                    sdf.translate(p, _vec3(params, P["offset"])),
                    sdf.rotate(p, R),
                    sdf.rotate_axis_angle(p, _vec3(params, P["axis_angle"])),
                    sdf.scale_point(p, params[P["s"]]),
                ]
            )
            for i, j in ti.static(ti.ndrange(4, 3)):
                out[n, i, j] = q[i, j]

    return _op("sdf_transforms", forward, 4, 3)


def transforms(points, params):
    return transforms_op(DTYPE_NAMES[points.dtype])(points, params)


def transforms_twin(points, params):
    q = _unpack(params, XF)
    return torch.stack(
        [
            ref.translate(points, q["offset"]),
            ref.rotate(points, q["R"].reshape(3, 3)),
            ref.rotate_axis_angle(points, q["axis_angle"]),
            ref.scale_point(points, q["s"]),
        ],
        1,
    )


def _random_rotation(seed):
    A = torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    Q, _ = torch.linalg.qr(A)
    return Q * torch.linalg.det(Q)


def _xf_params(dtype, device, axis_angle=(0.3, -1.1, 0.7), R=None):
    R = _random_rotation(7) if R is None else R
    flat = _pack(XF, offset=(0.3, -0.5, 1.2), R=R.flatten().tolist(), axis_angle=axis_angle, s=1.7)
    return torch.tensor(flat, dtype=dtype, device=device)


# The Taylor branch (|w|^2 < 1e-4), the zero rotation and a large angle.
AXIS_ANGLES = [(0.3, -1.1, 0.7), (4e-3, -2e-3, 5e-3), (0.0, 0.0, 0.0), (2.5, 1.0, -1.5)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_transforms_match_twin(device, dtype):
    points = (torch.rand(32, 3, generator=torch.Generator().manual_seed(8), dtype=dtype) * 4 - 2).to(device)
    for aa in AXIS_ANGLES:
        params = _xf_params(dtype, device, axis_angle=aa).requires_grad_()
        assert_matches_twin(transforms, transforms_twin, (points.requires_grad_(), params), atol=TOL[dtype], rtol=1e-6)


@pytest.mark.parametrize("axis_angle", AXIS_ANGLES[:3])
def test_transforms_gradcheck(device, axis_angle):
    points = (torch.rand(4, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 4 - 2).to(device)
    params = _xf_params(torch.float64, device, axis_angle=axis_angle).requires_grad_()
    assert torch.autograd.gradcheck(transforms, (points.requires_grad_(), params), nondet_tol=1e-12)


def _skew(w):
    z = torch.zeros((), dtype=w.dtype)
    return torch.stack([torch.stack([z, -w[2], w[1]]), torch.stack([w[2], z, -w[0]]), torch.stack([-w[1], w[0], z])])


def test_transforms_exact(device):
    d = torch.float64
    points = (torch.rand(16, 3, generator=torch.Generator().manual_seed(10), dtype=d) * 4 - 2).to(device)
    for aa in AXIS_ANGLES:
        out = transforms(points, _xf_params(d, device, axis_angle=aa))
        R = torch.linalg.matrix_exp(_skew(torch.tensor(aa, dtype=d))).to(device)
        close = functools.partial(torch.testing.assert_close, atol=1e-12, rtol=0)
        close(out[:, 0], points - torch.tensor([0.3, -0.5, 1.2], dtype=d, device=device))
        close(out[:, 1], points @ _random_rotation(7).to(device))  # row-vector form of R^T p
        close(out[:, 2], points @ R)
        close(out[:, 3], points / 1.7)

    # A box of half-size (1, 0.1, 0.1) rotated by 90 degrees about y lies along z: (0, 0, +-1) are
    # on its surface, (1, 0, 0) is 0.9 away. Both rotate and rotate_axis_angle, fed to sd_box.
    c, s = 0.0, 1.0
    Ry = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=d)
    params = _xf_params(d, device, axis_angle=(0.0, math.pi / 2, 0.0), R=Ry)
    pts = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]], dtype=d, device=device)
    out = transforms(pts, params)
    box = _prim_params(d, device, box_b=(1.0, 0.1, 0.1))
    for i in (1, 2):
        dist = primitives(out[:, i].contiguous(), box)[:, 1]
        torch.testing.assert_close(dist, torch.tensor([0.0, 0.0, 0.9], dtype=d, device=device), atol=1e-12, rtol=0)

    # Uniform scale: sd(p / s) * s is the exact distance to the scaled shape (sphere r -> s r).
    pts = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.5, 0.0], [1.0, 2.0, 2.0]], dtype=d, device=device).requires_grad_()
    scaled = transforms(pts, params)[:, 3].contiguous()
    dist = primitives(scaled, _prim_params(d, device, sphere_r=0.5))[:, 0] * 1.7
    expect = torch.tensor([3.0, 0.5, 3.0], dtype=d, device=device) - 0.5 * 1.7
    torch.testing.assert_close(dist, expect, atol=1e-12, rtol=0)
    (g,) = torch.autograd.grad(dist.sum(), pts)  # still an exact SDF: unit gradient
    torch.testing.assert_close(g.norm(dim=-1), torch.ones(3, dtype=d, device=device), atol=1e-12, rtol=0)
