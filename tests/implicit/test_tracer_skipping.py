"""Empty-space skipping (`BoundGrid`) and the `SkipMarcher`: the grid is conservative, skipping
never changes which rays hit or where (vs the same marcher without a grid, vs IDR's marcher, vs the
true root), a stale grid never makes a ray skip its surface, and `march_field`'s output flags."""

import pytest
import torch

from taichi_sdf.cameras import camera as C
from taichi_sdf.core.validation import unit_directions
from taichi_sdf.implicit.marchers import IDRMarcher
from taichi_sdf.implicit.marchers.base import FieldEvaluator
from taichi_sdf.implicit.marchers.bound_grid import BoundGrid
from taichi_sdf.implicit.marchers.skip import SkipMarcher
from taichi_sdf.implicit.wavefront import march_field
from taichi_sdf.models.sdf_net import SDFNetwork


def rays(device, size=24, eye=(0.6, 0.5, 2.5)):
    cam = C.look_at(torch.tensor([eye]), width=size, height=size, fov_x_deg=45.0).to(device, torch.float32)
    o, d = cam.image_rays()
    return o.reshape(-1, 3).contiguous(), d.reshape(-1, 3).contiguous()


def chords(o, d):
    """(t_near, t_far) of rays through the unit sphere (equal where they miss it)."""
    b = (o * d).sum(-1)
    disc = (b * b - (o * o).sum(-1) + 1.0).clamp_min(0).sqrt()
    return (-b - disc).clamp_min(0), (-b + disc).clamp_min(0)


def sphere(x):
    return x.norm(dim=-1) - 0.5


def box(x):
    q = (x - torch.tensor([0.1, 0.0, 0.0], device=x.device)).abs() - torch.tensor([0.5, 0.3, 0.2], device=x.device)
    return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)


def torus_and_ball(x):  # two separate objects: rays pass through holes and gaps
    q = torch.stack([x[:, [0, 2]].norm(dim=-1) - 0.5, x[:, 1]], -1)
    ball = (x - torch.tensor([0.0, 0.45, 0.0], device=x.device)).norm(dim=-1) - 0.15
    return torch.minimum(q.norm(dim=-1) - 0.12, ball)


FIELDS = {"sphere": sphere, "box": box, "torus_and_ball": torus_and_ball}


def small_network(device):
    torch.manual_seed(3)
    return SDFNetwork(hidden=32, n_layers=4, skip_in=(2,), multires=2, init_radius=0.5).to(device)


def march(marcher, fn, o, d):
    ev = FieldEvaluator(fn, 65536, o.dtype)
    with torch.no_grad():
        return marcher.march(ev, o, d, level=0.0, image_shape=None), ev.count


def true_roots(fn, o, d, t, half=2e-3):
    """Bisection of the crossing within t +- half (NaN where the sign does not change)."""
    with torch.no_grad():
        lo, hi = t - half, t + half
        ok = (fn(o + lo[:, None] * d) > 0) & (fn(o + hi[:, None] * d) < 0)
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            pos = fn(o + mid[:, None] * d) > 0
            lo, hi = torch.where(pos, mid, lo), torch.where(pos, hi, mid)
    return torch.where(ok, 0.5 * (lo + hi), float("nan"))


@pytest.mark.parametrize("name", list(FIELDS))
def test_grid_bounds_contain_every_inside_point(device, name):
    fn = FIELDS[name]
    o, d = rays(device)
    grid = BoundGrid(resolution=16).refresh(fn, device=device)
    assert 0.0 < grid.occupancy < 0.9  # something is skipped, something kept
    n = o.shape[0]
    t_near, t_far = chords(o, d)
    t0, t1, anyocc = grid.bounds(o, d, t_near, t_far)
    # Dense samples along every chord: each point with f <= margin (surface, inside) lies in [t0, t1].
    s = torch.linspace(0, 1, 2001, device=device)
    ts = t_near[:, None] + s[None] * (t_far - t_near)[:, None]
    f = fn((o[:, None] + ts[..., None] * d[:, None]).reshape(-1, 3)).reshape(n, -1)
    near = (f <= grid.margin) & (t_far > t_near)[:, None]
    assert near.any()
    assert bool((~near | (anyocc[:, None] & (ts >= t0[:, None]) & (ts <= t1[:, None]))).all())
    assert bool((t0 >= t_near).all() and (t1 <= t_far).all())


@pytest.mark.parametrize("name", list(FIELDS))
def test_lower_bound_is_below_the_field(device, name):
    fn = FIELDS[name]
    grid = BoundGrid(resolution=16).refresh(fn, device=device)
    x = torch.rand(20000, 3, device=device) * 2.4 - 1.2  # also outside the grid's cube
    b = grid.lower_bound(x)
    assert bool((b <= fn(x) + 1e-6).all())
    assert float((fn(x) - b).median()) < 0.2  # and useful: within a few cells of the field


@pytest.mark.parametrize("name", list(FIELDS))
def test_skipping_keeps_hits_and_depths(device, name):
    fn = FIELDS[name]
    o, d = rays(device)
    grid = BoundGrid(resolution=16).refresh(fn, device=device)
    plain, n_plain = march(SkipMarcher(), fn, o, d)
    skipped, n_skip = march(SkipMarcher(grid=grid, secant_below=0.01), fn, o, d)
    idr, n_idr = march(IDRMarcher(), fn, o, d)
    assert n_skip < n_plain < n_idr
    assert torch.equal(skipped.hit, plain.hit)
    assert torch.equal(skipped.hit, idr.hit)
    assert 50 < int(skipped.hit.sum()) < o.shape[0]
    ref = true_roots(fn, o[skipped.hit], d[skipped.hit], skipped.t[skipped.hit])
    assert torch.isfinite(ref).all()
    # |f| <= eps = 5e-5 at the answer: within eps / |df/dt| of the root (slow where the ray grazes)
    oh, dh = o[skipped.hit], d[skipped.hit]
    slope = (fn(oh + (ref + 1e-4)[:, None] * dh) - fn(oh + (ref - 1e-4)[:, None] * dh)).abs() / 2e-4
    for r in (skipped, plain):
        assert bool(((r.t[r.hit] - ref).abs() <= 1.5 * 5e-5 / slope + 1e-5).all())


def test_skipping_on_a_network_matches_idr(device):
    net = small_network(device).eval()
    fn = lambda x: net.sdf(x)  # noqa: E731
    o, d = rays(device, size=32)
    grid = BoundGrid(resolution=16).refresh(fn, params=net.parameters(), device=device)
    skipped, n_skip = march(SkipMarcher(grid=grid, secant_below=0.01), fn, o, d)
    idr, n_idr = march(IDRMarcher(), fn, o, d)
    assert n_skip * 2 < n_idr
    assert float((skipped.hit == idr.hit).float().mean()) >= 0.995
    both = skipped.hit & idr.hit
    assert int(both.sum()) > 100
    ref = true_roots(fn, o[both], d[both], idr.t[both])
    ok = torch.isfinite(ref)
    assert float(ok.float().mean()) > 0.95
    # ours is at least as close to the true root as IDR's own answer (both to |f| <= eps)
    err_ours = (skipped.t[both] - ref)[ok].abs()
    err_idr = (idr.t[both] - ref)[ok].abs()
    assert float(err_ours.quantile(0.99)) <= float(err_idr.quantile(0.99)) + 1e-5


def test_stale_grid_is_not_used_after_an_optimiser_step(device):
    net = small_network(device)
    fn = lambda x: net.sdf(x)  # noqa: E731
    grid = BoundGrid(resolution=16).refresh(fn, params=net.parameters(), device=device)
    assert grid.is_current()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = fn(torch.rand(64, 3, device=device)).square().mean()
    loss.backward()
    opt.step()
    assert not grid.is_current()
    grid.refresh(fn, params=net.parameters(), device=device)
    assert grid.is_current()


def test_stale_grid_never_skips_the_surface(device):
    net = small_network(device).eval()
    fn = lambda x: net.sdf(x)  # noqa: E731
    o, d = rays(device)
    grid = BoundGrid(resolution=16).refresh(fn, params=net.parameters(), device=device)
    with torch.no_grad():  # the object grows from radius ~0.5 to ~0.8: surface where the grid saw empty space
        net.layers[-1].bias -= 0.3
    plain, _ = march(SkipMarcher(), fn, o, d)
    stale, _ = march(SkipMarcher(grid=grid), fn, o, d)
    assert torch.equal(stale.hit, plain.hit)
    assert torch.equal(stale.t[stale.hit], plain.t[plain.hit])
    assert int(plain.hit.sum()) > 100


def test_untracked_grid_whose_entry_is_inside_restarts_at_the_sphere(device):
    # A grid of a small ball used (against its contract: no params to check) on a large one: rays that
    # meet both enter at the small ball's cells, inside the large one; they restart and find it.
    o, d = rays(device)
    grid = BoundGrid(resolution=16).refresh(lambda x: x.norm(dim=-1) - 0.2, device=device)
    big = lambda x: x.norm(dim=-1) - 0.6  # noqa: E731
    plain, _ = march(SkipMarcher(), big, o, d)
    stale, _ = march(SkipMarcher(grid=grid), big, o, d)
    t0, t1, anyocc = grid.bounds(o, d, *chords(o, d))
    through_small = anyocc & (big(o + t0[:, None] * d) < -1e-3)  # skips that land inside the large ball
    assert int(through_small.sum()) > 20
    assert bool(stale.hit[through_small].all())
    assert float((stale.t - plain.t)[through_small].abs().max()) < 1e-3


def test_march_field_output_flags(device):
    o, d = rays(device, size=12)
    full = march_field(sphere, o, d, marcher=SkipMarcher())
    lean = march_field(sphere, o, d, marcher=SkipMarcher(), normals=False, min_sdf=False, polish_steps=0)
    assert full.normals is not None and full.min_sdf is not None
    assert lean.normals is None and lean.min_sdf is None
    assert torch.equal(lean.hit, full.hit)
    assert lean.num_evals < full.num_evals - o.shape[0]
    assert float((lean.t - full.t)[full.hit].abs().max()) < 1e-5
    assert lean.reshape(12, 12).normals is None


def test_options_are_checked():
    with pytest.raises(ValueError, match="resolution"):
        BoundGrid(resolution=1)
    with pytest.raises(ValueError, match="lipschitz"):
        BoundGrid(lipschitz=0.0)
    with pytest.raises(TypeError, match="grid"):
        SkipMarcher(grid="coarse")
    with pytest.raises(ValueError, match="max_step_ratio"):
        SkipMarcher(max_step_ratio=3.0)
    assert not BoundGrid().is_current()  # never built: not used


def test_level_set_and_float64(device):
    cam = C.look_at(torch.tensor([[0.0, 0.2, 2.5]]), width=16, height=16, fov_x_deg=45.0).to(device, torch.float64)
    o, d = (x.reshape(-1, 3).contiguous() for x in cam.image_rays())
    grid = BoundGrid(resolution=16).refresh(lambda x: sphere(x) - 0.1, device=device, dtype=torch.float64)
    r = march_field(sphere, o, d, marcher=SkipMarcher(grid=grid), level=0.1, normals=False, min_sdf=False)
    b = (o * d).sum(-1)
    disc = b * b - (o * o).sum(-1) + 0.36
    clear = disc > 0.05
    assert int(clear.sum()) > 30
    assert r.t.dtype == torch.float64 and bool(r.hit[clear].all()) and not bool(r.hit[disc < 0].any())
    assert float((r.t - (-b - disc.clamp_min(0).sqrt()))[clear].abs().max()) < 1e-6


@pytest.mark.parametrize("name", ["box", "torus_and_ball"])
def test_rays_left_after_max_steps_fall_back_to_sampling(device, name):
    fn = FIELDS[name]
    o, d = rays(device)
    full, _ = march(SkipMarcher(), fn, o, d)
    short, _ = march(SkipMarcher(max_steps=2), fn, o, d)  # nearly every ray ends in IDR's sampler + secant
    assert float((short.hit == full.hit).float().mean()) >= 0.99
    both = short.hit & full.hit
    assert float((short.t - full.t)[both].abs().quantile(0.95)) < 1e-4
    assert int(short.steps.max()) > 100  # the sampler's points are counted per ray


# -- gradient="none": the render path (DIST's render_depth job) ---------------------------------------


@pytest.mark.parametrize("name", [*FIELDS, "network"])
def test_render_path_min_sdf_is_the_separate_pass_value(device, name):
    """`gradient="none"` takes the min-SDF sample's value from the march (no second field pass on rays
    with a sample): it equals the field at `t_min_sdf`, the separate pass's value, on analytic fields
    and a network; hits are the implicit path's, depths within its one Newton step."""
    if name == "network":
        net = small_network(device).eval()
        fn = lambda x: net.sdf(x)  # noqa: E731
    else:
        fn = FIELDS[name]
    o, d = rays(device)
    d = unit_directions("d", d)
    grid = BoundGrid(resolution=16).refresh(fn, device=device)
    marcher = SkipMarcher(grid=grid, secant_below=0.01)
    with torch.no_grad():
        ref = march_field(fn, o, d, marcher=marcher, normals=False, polish_steps=0)
        fast = march_field(fn, o, d, marcher=marcher, normals=False, polish_steps=0, gradient="none")
        separate = fn(o + fast.t_min_sdf[:, None] * d)
    assert torch.equal(fast.hit, ref.hit) and torch.equal(fast.t_min_sdf, ref.t_min_sdf)
    assert 20 < int(fast.hit.sum()) < o.shape[0]
    tol = 1e-6  # the same points; a value may differ in the last ulp with its batch (vectorised reductions)
    t_near, t_far = chords(o, d)
    on = t_far > t_near  # rays through the bounding sphere; the others get its distance, a lower bound
    assert 10 < int((~on).sum()) and float((fast.min_sdf - separate)[on].abs().max()) <= tol
    assert float((fast.min_sdf - ref.min_sdf)[on].abs().max()) <= tol
    off = o[~on] + fast.t_min_sdf[~on, None] * d[~on]
    assert torch.allclose(fast.min_sdf[~on], off.norm(dim=-1) - 1.0)
    assert bool((fast.min_sdf[~on] <= separate[~on] + tol).all())
    # Depths are the marcher's own (at most a secant step from a sample with |f| <= eps; as close to the
    # true root as `test_skipping_keeps_hits_and_depths` shows); the implicit path adds a Newton step,
    # which moves grazing hits (|grad f . d| small) further.
    alone, _ = march(marcher, fn, o, unit_directions("d", d))  # march_field normalises the directions
    assert torch.equal(fast.t[fast.hit], alone.t[alone.hit])
    assert float(((fast.t - ref.t)[fast.hit].abs() < 1e-4).float().mean()) > 0.95
    # Evaluations: the march, plus one per ray through the sphere the march took no sample on (skipped).
    skipped = (fast.steps == 0) & on
    assert int(skipped.sum()) > 10
    assert fast.num_evals == fast.marching_evals + int(skipped.sum())
    assert fast.num_evals < ref.num_evals - int(fast.hit.sum())


def test_render_path_outputs(device):
    """`gradient="none"`: detached outputs, normals on request, marchers without an in-march value
    (IDRMarcher) get the separate pass, and the Newton polish when asked."""
    o, d = rays(device, size=12)
    og = o.clone().requires_grad_(True)
    r = march_field(sphere, og, d, marcher=SkipMarcher(), gradient="none", polish_steps=0)
    for x in (r.t, r.points, r.normals, r.min_sdf):
        assert not x.requires_grad
    hits = r.points[r.hit]
    assert float((r.normals[r.hit] - hits / hits.norm(dim=-1, keepdim=True)).abs().max()) < 1e-4
    idr = march_field(sphere, o, d, marcher=IDRMarcher(), gradient="none", normals=False, polish_steps=0)
    ref = march_field(sphere, o, d, marcher=IDRMarcher(), normals=False, polish_steps=0)
    assert torch.equal(idr.min_sdf, ref.min_sdf.detach())
    polished = march_field(sphere, o, d, marcher=IDRMarcher(eps=1e-2), gradient="none", normals=False, polish_steps=1)
    rough = march_field(sphere, o, d, marcher=IDRMarcher(eps=1e-2), gradient="none", normals=False, polish_steps=0)
    err = lambda r: (sphere(o + r.t[:, None] * d)[r.hit]).abs().max()  # noqa: E731
    assert float(err(polished)) < 0.1 * float(err(rough))
    with pytest.raises(ValueError, match="gradient"):
        march_field(sphere, o, d, gradient="exact")


@pytest.mark.parametrize("name", list(FIELDS))
def test_rays_the_grid_skips_take_their_min_sdf_where_the_grid_puts_the_surface_nearest(device, name):
    """A ray the grid certifies empty is never marched; its min-SDF point is the chord sample where the
    grid's interpolant is lowest, nearer the surface than the chord's closest point to the centre."""
    fn = FIELDS[name]
    o, d = rays(device)
    d = unit_directions("d", d)
    grid = BoundGrid(resolution=16).refresh(fn, device=device)
    r = march_field(fn, o, d, marcher=SkipMarcher(grid=grid), gradient="none", normals=False, polish_steps=0)
    t_near, t_far = chords(o, d)
    skipped = (r.steps == 0) & (t_far > t_near)
    assert int(skipped.sum()) > 20
    t_close = -(o * d).sum(-1)
    at_close = fn(o + t_close[:, None] * d)[skipped]
    assert bool((r.min_sdf[skipped] > grid.margin).all())  # certified empty: outside everywhere
    # The closest point to the centre is the exact minimum on a centred sphere; the grid's samples are
    # half a cell apart.
    slack = grid.cell / 2 if name == "sphere" else 0.0
    assert float(r.min_sdf[skipped].mean()) < float(at_close.mean()) + slack
    if name != "sphere":
        assert float((r.min_sdf[skipped] <= at_close + 1e-6).float().mean()) > 0.8


def test_grid_zero_is_near_the_first_root_and_nan_without_one(device):
    o, d = rays(device, size=32)
    grid = BoundGrid(resolution=32).refresh(sphere, device=device)
    t_near, t_far = chords(o, d)
    t0, t1, anyocc, t_zero, v_enter = grid.bounds(o, d, t_near, t_far, zero=True)
    # the analytic first root of |x| = 0.5
    b = (o * d).sum(-1)
    disc = b * b - (o * o).sum(-1) + 0.25
    root = -b - disc.clamp_min(0).sqrt()
    through = disc > 0.02  # rays through the ball, not grazing it
    assert int(through.sum()) > 50
    assert torch.isfinite(t_zero[through]).all()
    assert float((t_zero[through] - root[through]).abs().max()) < 0.25 * grid.cell
    assert bool((t_zero[through] >= t0[through]).all()) and bool((v_enter[through] > 0).all())
    assert torch.isnan(t_zero[~anyocc]).all() and torch.isnan(v_enter[~anyocc]).all()
    # the other outputs do not depend on asking for these
    assert all(torch.equal(a, b) for a, b in zip(grid.bounds(o, d, t_near, t_far), (t0, t1, anyocc)))


@pytest.mark.parametrize("name", list(FIELDS))
def test_grid_guess_keeps_hits_and_depths_with_fewer_points(device, name):
    fn = FIELDS[name]
    o, d = rays(device, size=32)
    grid = BoundGrid(resolution=32).refresh(fn, device=device)
    kw = dict(grid=grid, secant_below=0.05, max_step_ratio=1.5, max_step=0.15)  # DIST's job
    entry, n_entry = march(SkipMarcher(**kw), fn, o, d)
    guess, n_guess = march(SkipMarcher(**kw, guess_cells=0.25), fn, o, d)
    assert n_guess < n_entry
    assert torch.equal(guess.hit, entry.hit)
    h = guess.hit
    assert int(h.sum()) > 50
    ref = true_roots(fn, o[h], d[h], guess.t[h])
    assert torch.isfinite(ref).all()
    oh, dh = o[h], d[h]
    slope = (fn(oh + (ref + 1e-4)[:, None] * dh) - fn(oh + (ref - 1e-4)[:, None] * dh)).abs() / 2e-4
    assert bool(((guess.t[h] - ref).abs() <= 1.5 * 5e-5 / slope + 1e-5).all())


def test_grid_guess_inside_restarts_at_the_certified_entry(device):
    # Grid values raised by 0.03 with a margin of 0.05: the bounds stay conservative for the surface
    # (certified points have f > 0.02), but the interpolant's zero lies 0.03 inside the ball, so a
    # guess with no back-off lands inside and must restart at the entry, not report that point.
    o, d = rays(device, size=32)
    grid = BoundGrid(resolution=16, margin=0.05).refresh(lambda x: sphere(x) + 0.03, device=device)
    plain, _ = march(SkipMarcher(), sphere, o, d)
    guess, _ = march(SkipMarcher(grid=grid, guess_cells=0.0), sphere, o, d)
    assert torch.equal(guess.hit, plain.hit) and int(guess.hit.sum()) > 50
    assert float((guess.t[guess.hit] - plain.t[plain.hit]).abs().max()) < 1e-4
    t_zero = grid.bounds(o, d, *chords(o, d), zero=True)[3]
    inside = torch.isfinite(t_zero) & (sphere(o + t_zero.nan_to_num(0)[:, None] * d) < -1e-3)
    assert int(inside.sum()) > 50  # the restart path is taken
    # ... and restarts at the certified entry (not at the bounding sphere): from there it is the entry
    # start's march exactly, plus the one wasted sample
    entry, _ = march(SkipMarcher(grid=grid), sphere, o, d)
    assert torch.equal(guess.steps[inside], entry.steps[inside] + 1)
    assert torch.equal(guess.t[inside], entry.t[inside])


def test_grid_guess_option_is_checked():
    with pytest.raises(ValueError, match="guess_cells"):
        SkipMarcher(guess_cells=-1.0)
