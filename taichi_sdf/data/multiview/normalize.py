"""Estimate the normalisation (object -> unit sphere): from masks and cameras by a coarse visual hull,
from sparse points (a percentile bound), or from where the cameras look; and the cameras of the
normalised frame. Every estimate is a `scale_mat [4, 4]` (normalised -> world) as IDR stores it."""

from __future__ import annotations

import warnings

import torch

from taichi_sdf.cameras.camera import Camera


def visual_hull(cameras: Camera, masks: torch.Tensor, resolution: int = 64, extent: float | None = None,
                min_views_fraction: float = 1.0, min_seen_fraction: float = 0.5) -> torch.Tensor:  # fmt: skip
    """Points `[M, 3]` of a `resolution^3` grid that project inside the masks of every view that sees them.

    Args:
        masks: `[N, H, W]` bool.
        extent: half side of the cube searched around the origin; defaults to the distance of the
            nearest camera (the object must lie between the cameras).
        min_views_fraction: a point survives if inside the masks of at least this fraction of the views
            in which it projects into the image...
        min_seen_fraction: ...and if it projects into at least this fraction of all views (otherwise
            points far off to the side, seen by one or two cameras, would survive).
    """
    if extent is None:
        extent = float(cameras.centers.norm(dim=-1).min())
    lin = torch.linspace(-extent, extent, resolution, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(-1, 3)
    inside = torch.zeros(len(pts), dtype=torch.int32)
    seen = torch.zeros(len(pts), dtype=torch.int32)
    H, W = masks.shape[1:]
    for i in range(len(cameras)):
        uv, z = cameras[i].project(pts)
        uv, z = uv[0], z[0]
        col, row = torch.floor(uv[:, 0]).long(), torch.floor(uv[:, 1]).long()
        valid = (z > 0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
        hit = torch.zeros(len(pts), dtype=torch.bool)
        hit[valid] = masks[i].cpu()[row[valid], col[valid]]
        seen += valid.int()
        inside += hit.int()
        if min_views_fraction >= 1.0:  # one view that sees a point outside its mask rejects it: drop it
            alive = ~valid | hit
            pts, seen, inside = pts[alive], seen[alive], inside[alive]
    min_seen = max(1, int(min_seen_fraction * len(cameras)))
    keep = (seen >= min_seen) & (inside >= torch.ceil(min_views_fraction * seen.double()).int())
    return pts[keep]


def estimate_normalization(cameras: Camera, masks: torch.Tensor, margin: float = 1.1, resolution: int = 64,
                           centre: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """`scale_mat [4, 4]` (normalised -> world) that puts the masks' visual hull inside the sphere of
    radius 1/margin: centre = centre of the hull's bounding box, scale = margin x the largest distance
    of a hull point from that centre. Raises ValueError when the masks are empty or inconsistent.

    The first search grid is centred on the world origin, or on `centre` `[3]` (e.g. `look_at_point`)
    for worlds whose origin is not near the object (COLMAP, nerfstudio)."""
    if centre is not None:
        shift = torch.eye(4, dtype=torch.float64)
        shift[:3, 3] = torch.as_tensor(centre, dtype=torch.float64)
        return shift @ estimate_normalization(cameras.to(dtype=torch.float64).transformed(shift), masks, margin, resolution)
    cams = cameras.to(dtype=torch.float64)
    hull = visual_hull(cams, masks, resolution)
    if len(hull) == 0:
        raise ValueError("masks: the visual hull is empty (masks empty, or cameras inconsistent with them)")
    # Refine on a tighter grid around the first estimate.
    centre = (hull.amin(0) + hull.amax(0)) / 2
    extent = float((hull - centre).abs().max()) + 2 * float(cams.centers.norm(dim=-1).min()) / resolution
    shift = torch.eye(4, dtype=torch.float64)
    shift[:3, 3] = centre
    shifted = cams.transformed(shift)
    hull = visual_hull(shifted, masks, resolution, extent=extent) + centre
    if len(hull) == 0:
        raise ValueError("masks: the visual hull is empty after refinement")
    centre = (hull.amin(0) + hull.amax(0)) / 2
    scale = margin * float((hull - centre).norm(dim=-1).max())
    S = torch.eye(4, dtype=torch.float64)
    S[:3, :3] *= scale
    S[:3, 3] = centre
    return S


def _similarity(centre: torch.Tensor, scale: float) -> torch.Tensor:
    S = torch.eye(4, dtype=torch.float64)
    S[:3, :3] *= scale
    S[:3, 3] = centre
    return S


def normalization_from_points(points: torch.Tensor, percentile: float = 99.0, margin: float = 1.1) -> torch.Tensor:
    """`scale_mat [4, 4]` that puts `percentile`% of `points [P, 3]` (world units) inside the sphere of
    radius 1/margin, robust to the stray points of a sparse reconstruction: centre = the midpoint of the
    per-axis (100 - percentile, percentile) percentiles, radius = margin x the percentile of the
    distances from it. Raises ValueError for fewer than 4 finite points."""
    points = torch.as_tensor(points, dtype=torch.float64).reshape(-1, 3)
    points = points[torch.isfinite(points).all(-1)]
    if len(points) < 4:
        raise ValueError(f"points: expected at least 4 finite points to bound the object, got {len(points)}")
    if not 50.0 <= percentile <= 100.0:
        raise ValueError(f"percentile: expected a value in [50, 100], got {percentile!r}")
    q = torch.tensor([1 - percentile / 100, percentile / 100], dtype=torch.float64)
    lo, hi = torch.quantile(points, q, dim=0)
    centre = (lo + hi) / 2
    radius = float(torch.quantile((points - centre).norm(dim=-1), q[1]))
    if not radius > 0:
        raise ValueError("points: all points coincide; cannot bound the object")
    return _similarity(centre, margin * radius)


def look_at_point(cameras: Camera) -> torch.Tensor:
    """`[3]` the world point nearest (least squares) to every camera's optical axis: where an
    object-centric capture looks. Raises ValueError when the axes are (nearly) parallel or the point
    lies behind a camera."""
    cams = cameras.to(dtype=torch.float64)
    c, d = cams.centers, cams.R[:, 2]  # optical axis: row 2 of R is the camera's z axis in world coordinates
    P = torch.eye(3, dtype=torch.float64) - d[:, :, None] * d[:, None, :]  # projectors orthogonal to each axis
    A, b = P.sum(0), (P @ c[..., None]).sum(0)[:, 0]
    eig = torch.linalg.eigvalsh(A)
    if not eig[0] > 1e-6 * eig[-1]:
        raise ValueError("cameras: the optical axes are (nearly) parallel; they do not look at a common point")
    p = torch.linalg.solve(A, b)
    if ((p - c) * d).sum(-1).min() <= 0:
        raise ValueError(
            "cameras: the point nearest to the optical axes lies behind a camera; they do not look at a common point"
        )
    return p


def normalization_from_cameras(cameras: Camera) -> torch.Tensor:
    """`scale_mat [4, 4]` of the largest sphere about `look_at_point` that every camera sees whole:
    radius = min over cameras of distance x sin(half the narrower field of view). A guess for captures
    without masks or points: an object that fills no view beyond its edges lies inside it."""
    cams = cameras.to(dtype=torch.float64)
    centre = look_at_point(cams)
    dist = (cams.centers - centre).norm(dim=-1)
    half_fov = torch.minimum(torch.atan(0.5 * cams.width / cams.K[:, 0, 0]), torch.atan(0.5 * cams.height / cams.K[:, 1, 1]))
    return _similarity(centre, float((dist * torch.sin(half_fov)).min()))


def normalized_cameras(cameras: Camera, scale_mat: torch.Tensor) -> Camera:
    """Cameras of the normalised frame, `x_world = scale_mat @ x_normalised`, for a similarity
    `scale_mat [4, 4]` = [s Q | c] (Q a rotation): exactly, without decomposing a projection."""
    S = torch.as_tensor(scale_mat, dtype=torch.float64)
    s = float(torch.linalg.det(S[:3, :3])) ** (1 / 3)
    if not s > 0:
        raise ValueError("scale_mat: expected a similarity [s Q | c] with s > 0")
    Q = S[:3, :3] / s
    if (Q.T @ Q - torch.eye(3, dtype=torch.float64)).abs().max() > 1e-6:
        raise ValueError("scale_mat: expected a similarity [s Q | c] (uniform scale times a rotation)")
    cams = cameras.to(dtype=torch.float64)
    T = cams.T_cam_world.clone()
    T[:, :3, 3] = (cams.R @ S[:3, 3] + cams.t) / s
    T[:, :3, :3] = cams.R @ Q
    return Camera(cams.K, T, cams.width, cams.height).to(dtype=cameras.dtype)


def warn_cameras_inside(cameras: Camera, where: str) -> None:
    """Warn (naming `where` and the views) when cameras of the normalised frame sit inside the unit
    sphere: IDR's tracer and the apps assume every camera outside it (a normalisation from sparse
    points that include the background can give this)."""
    inside = (cameras.centers.norm(dim=-1) <= 1.0).nonzero()[:, 0].tolist()
    if inside:
        warnings.warn(
            f"{where}: {len(inside)} of {len(cameras)} cameras lie inside the unit sphere after normalisation "
            f"(views {inside[:8]}); the object bound is too large (background points?): give masks or a scale_mat",
            UserWarning,
            stacklevel=3,
        )


def given_scale_mat(scale_mat) -> torch.Tensor | None:
    """The `scale_mat` argument of the COLMAP and nerfstudio readers: None -> identity, a [4, 4] matrix as
    float64, "auto" -> None (the reader estimates it)."""
    if scale_mat is None:
        return torch.eye(4, dtype=torch.float64)
    if not isinstance(scale_mat, str):
        S = torch.as_tensor(scale_mat, dtype=torch.float64)
        if tuple(S.shape) != (4, 4):
            raise ValueError(f"scale_mat: expected shape [4, 4], got {list(S.shape)}")
        return S
    if scale_mat != "auto":
        raise ValueError(f"scale_mat: expected a [4, 4] matrix, 'auto' or None, got {scale_mat!r}")
    return None
