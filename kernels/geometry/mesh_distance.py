"""Mesh distance kernels: a linear BVH over triangles, exact closest-point queries and the
generalised winding number (Barill et al. 2018 "fast winding numbers", dipole far field).

Why a BVH and not a uniform grid: a grid answers near-surface queries well, but points far from
the surface (the centre of a closed shape, the corners of [-1, 1]^3) must search shells of mostly
empty cells, and a grid's cells cannot carry the hierarchical far-field sums that make the winding
number fast. One LBVH (Karras 2012) serves both: closest points by nearest-child-first descent with
pruning, winding numbers by Barill's dipole approximation of far nodes. It is built by parallel
kernels with torch glue (Morton codes; a torch sort; one kernel for all internal nodes; one for
depths and pre-order numbers; a bottom-up refit, in one launch with atomic counters on CPU and one launch per tree level on GPUs) and uses no global fields, so nothing recompiles when the mesh or the number of queries changes.

Long triangles are split for the tree (by the caller, `taichi_sdf.geometry.mesh_sdf`): a triangle far
longer than the nodes around it can never be approximated by a dipole nor pruned well, so a CAD
mesh of a few hundred long faces would cost O(F) per query. The tree therefore holds n "pieces"
(each a triangle or part of one, by longest-edge bisection); solid angles add up exactly over the
pieces, and `tri_bary [n, 9]` (the barycentrics of each piece's corners in its face) maps closest
points, barycentrics and regions back to the original faces exactly.

Tree layout (n pieces, M = 2n - 1 nodes). Karras' construction numbers internal nodes
0 .. n-2 and leaves n-1 .. 2n-2; the build then renumbers every node in depth-first pre-order
(root 0, a node's left child right after it, its subtree a contiguous block of 2k - 1 nodes for k
triangles), which makes the winding-number traversal stackless and sequential in memory: after a
node whose subtree is skipped, the next node to visit is node + 2k - 1.

- `nodes [M, 4] i32`: left child, right child (-1 for leaves), first and last triangle (Morton
  order) of the node's range. A node whose range has at most `LEAF_SIZE` triangles is treated as a
  leaf by the closest-point search (its triangles are tested directly), so no collapse pass.
- `box [M, 6]`: axis-aligned bounds (lo xyz, hi xyz).
- `wn [M, 8]`: winding-number data: expansion centre c (area-weighted centroid), a radius r
  bounding every triangle point's distance from c, the sum of area vectors A = sum 1/2 (b - a) x
  (c - a) and the total area. Far nodes are evaluated as a dipole A at c (the lowest-order term of
  Barill et al.'s expansion). The next term, sum_t (c_t - c) (x) A_t, vanishes for a flat cluster
  about its area-weighted centroid; on sphere and torus meshes it cut the mean error by 10-30% and
  did not lower the maximum, so it is not worth doubling the node size. During the build, in
  Karras numbering, `wn_k [M, 8]` holds c, A, r, area.
- `tris [n, 16]`: per piece in Morton order: corners a, b, c; 1.0 for a degenerate or sliver
  triangle (|ab x ac|^2 <= SLIVER * longest edge^4), whose closest point is taken on its three
  edges, else 0.0; the centre and radius of a sphere around it (centroid, farthest corner), which
  lets the closest-point search skip most triangles of a leaf without the full test; 2 pad
  columns (64-byte rows). `tri_face [n] i32`: original face index of each piece.
- `pn [F, 21]`: only for sign_mode "pseudonormal": per original face the unit face normal, then the
  angle-weighted pseudo-normals of corners a, b, c, then those of edges ab, bc, ca (Baerentzen &
  Aanaes 2005), in the order of the region codes below.

Sign modes of the query kernel:
- "winding": inside where |w| > 0.5, w the generalised winding number (Jacobson et al. 2013).
  Robust to holes (w only drifts from 0/1 near a hole), to overlapping or self-intersecting parts
  (w = 2 where two closed parts overlap), to duplicated faces and to a mesh whose faces are all
  flipped (w = -1 inside).
- "pseudonormal": the sign of (p - closest) . pseudo-normal of the closest feature (face, edge or
  vertex). Exact and cheaper, but only for watertight, manifold, consistently oriented meshes: it
  is wrong wherever the closest face is an internal face of overlapping parts (a chair leg inside
  its seat), a flipped face, or a face next to a hole.
- "none": unsigned distance.
"""

import functools
import math

import taichi as ti

from taichi_sdf.kernels.dtypes import ti_float

LEAF_SIZE = 8  # closest-point queries test the triangles of nodes covering at most this many directly
WINDING_LEAF_SIZE = 2  # the same for winding numbers (smaller: far single triangles use their dipole)
STACK_SIZE = 64  # traversal stack; the tree depth is at most 62 (30 Morton bits + 32 index bits)
SIGN_MODES = ("none", "winding", "pseudonormal")
SLIVER = {"f32": 1e-10, "f64": 1e-20}  # (height / longest edge)^2 below which a triangle is 3 segments

# Region of the closest point on a triangle (abc), as returned by `closest_on_triangle`.
REGION_FACE, REGION_A, REGION_B, REGION_C, REGION_AB, REGION_BC, REGION_CA = range(7)

_i32_1 = ti.types.ndarray(dtype=ti.i32, ndim=1)
_i32_2 = ti.types.ndarray(dtype=ti.i32, ndim=2)
_INV_4PI = 1.0 / (4.0 * math.pi)


# ------------------------------------------------------------------------------------------------
# Tree construction
# ------------------------------------------------------------------------------------------------


@ti.func
def _spread_bits(v):
    """10-bit integer -> bits spaced by 3 (for a 30-bit Morton code)."""
    r = 0
    for b in ti.static(range(10)):
        r |= ((v >> b) & 1) << (3 * b)
    return r


@ti.func
def _delta(codes: ti.template(), i, j):
    """Length of the common prefix of keys i and j (Morton code, then index to break ties);
    -1 when j is out of range (Karras 2012)."""
    r = -1
    if j >= 0 and j < codes.shape[0]:
        ci = codes[i]
        cj = codes[j]
        if ci != cj:
            r = ti.math.clz(ci ^ cj)
        else:
            r = 32 + ti.math.clz(i ^ j)
    return r


@functools.cache
def tree_kernels():
    """(build_tree, node_order): the dtype-free topology kernels.

    build_tree(codes [n] sorted, nodes [2n-1, 4], parent [2n-1]): children and triangle ranges of
        every node (Karras 2012), parents (-1 for the root).
    node_order(nodes, parent, depth [2n-1], pre [2n-1]): depth (root 0) and depth-first
        pre-order index of every node.
    """

    @ti.kernel
    def build_tree(codes: _i32_1, nodes: _i32_2, parent: _i32_1):
        n = codes.shape[0]
        parent[0] = -1
        for i in range(n - 1):
            d = 1
            if _delta(codes, i, i + 1) < _delta(codes, i, i - 1):
                d = -1
            dmin = _delta(codes, i, i - d)
            lmax = 2
            while _delta(codes, i, i + lmax * d) > dmin:
                lmax *= 2
            length = 0
            t = lmax // 2
            while t >= 1:
                if _delta(codes, i, i + (length + t) * d) > dmin:
                    length += t
                t //= 2
            j = i + length * d
            dnode = _delta(codes, i, j)
            s = 0
            div = 2
            while True:
                t = (length + div - 1) // div
                if _delta(codes, i, i + (s + t) * d) > dnode:
                    s += t
                if t <= 1:
                    break
                div *= 2
            gamma = i + s * d + ti.min(d, 0)
            lo = ti.min(i, j)
            hi = ti.max(i, j)
            left = gamma
            if lo == gamma:
                left = gamma + n - 1
            right = gamma + 1
            if hi == gamma + 1:
                right = gamma + n
            nodes[i, 0] = left
            nodes[i, 1] = right
            nodes[i, 2] = lo
            nodes[i, 3] = hi
            parent[left] = i
            parent[right] = i
        for i in range(n):
            nodes[n - 1 + i, 0] = -1
            nodes[n - 1 + i, 1] = -1
            nodes[n - 1 + i, 2] = i
            nodes[n - 1 + i, 3] = i

    @ti.kernel
    def node_order(nodes: _i32_2, parent: _i32_1, depth: _i32_1, pre: _i32_1):
        # Walk up to the root. In pre-order, the nodes before X are its ancestors and the complete
        # subtrees left of it, which hold its `first` preceding leaves in 2 first - k nodes, k being
        # the number of ancestors whose right subtree holds X: pre(X) = 2 first + depth - k.
        for i in range(parent.shape[0]):
            d = 0
            left_of = 0
            child = i
            k = parent[i]
            while k >= 0:
                d += 1
                if nodes[k, 0] == child:
                    left_of += 1
                child = k
                k = parent[k]
            depth[i] = d
            pre[i] = 2 * nodes[i, 2] + left_of

    return build_tree, node_order


@functools.cache
def build_kernels(dtype: str):
    """(morton, init_leaves, refit_level, to_preorder, refit_all) for float type "f32" | "f64".

    morton(centroids [n, 3], codes [n], lo_x, lo_y, lo_z, scale_x, scale_y, scale_z): 30-bit
        Morton code of each centroid quantised to a 1024^3 grid ((c - lo) * scale in [0, 1024)).
    init_leaves(corners [n, 9], piece_face [n] i32, order [n] i32, tris [n, 16], tri_face [n],
        box [M, 6], wn_k [M, 8]): gathers the triangles (pieces) in Morton order and fills the
        leaf nodes.
    refit_level(level_nodes [K] i32, start, count, nodes, box, wn): combines the children of the
        internal nodes level_nodes[start : start + count] (call deepest level first).
    refit_all(nodes, parent [M] i32, visits [M] i32 zeros, box, wn): all internal nodes in one
        launch (atomic visit counters; CPU only).
    to_preorder(pre [M] i32, nodes_k, box_k, wn_k, nodes, box, wn): copies the Karras-numbered
        arrays into pre-order (node i goes to pre[i]; see `tree_kernels().node_order`).
    """
    f = ti_float(dtype)
    f_2 = ti.types.ndarray(dtype=f, ndim=2)
    vec3 = ti.types.vector(3, f)
    sliver = SLIVER[dtype]

    @ti.kernel
    def morton(centroids: f_2, codes: _i32_1, lo_x: f, lo_y: f, lo_z: f, scale_x: f, scale_y: f, scale_z: f):
        for t in range(centroids.shape[0]):
            c = vec3(centroids[t, 0], centroids[t, 1], centroids[t, 2])
            x = (c - vec3(lo_x, lo_y, lo_z)) * vec3(scale_x, scale_y, scale_z)
            q = ti.min(ti.max(ti.cast(ti.floor(x), ti.i32), 0), 1023)
            codes[t] = (_spread_bits(q[0]) << 2) | (_spread_bits(q[1]) << 1) | _spread_bits(q[2])

    @ti.kernel
    def init_leaves(corners: f_2, piece_face: _i32_1, order: _i32_1, tris: f_2, tri_face: _i32_1, box: f_2, wn: f_2):
        n = corners.shape[0]
        for i in range(n):
            src = order[i]
            a = vec3(corners[src, 0], corners[src, 1], corners[src, 2])
            b = vec3(corners[src, 3], corners[src, 4], corners[src, 5])
            c = vec3(corners[src, 6], corners[src, 7], corners[src, 8])
            for k in ti.static(range(3)):
                tris[i, k] = a[k]
                tris[i, 3 + k] = b[k]
                tris[i, 6 + k] = c[k]
            # Slivers (height below ~sqrt(eps) of the longest edge) and degenerate triangles are
            # treated as their three edges: Ericson's region walk divides by their vanishing areas.
            longest = ti.max((b - a).norm_sqr(), ti.max((c - b).norm_sqr(), (a - c).norm_sqr()))
            tris[i, 9] = 0.0
            if (b - a).cross(c - a).norm_sqr() <= sliver * longest * longest:
                tris[i, 9] = 1.0
            tri_face[i] = piece_face[src]
            node = n - 1 + i
            lo = ti.min(a, ti.min(b, c))
            hi = ti.max(a, ti.max(b, c))
            area_vec = 0.5 * (b - a).cross(c - a)
            centre = (a + b + c) / 3.0
            radius = ti.sqrt(ti.max((a - centre).norm_sqr(), ti.max((b - centre).norm_sqr(), (c - centre).norm_sqr())))
            for k in ti.static(range(3)):
                box[node, k] = lo[k]
                box[node, 3 + k] = hi[k]
                wn[node, k] = centre[k]
                wn[node, 3 + k] = area_vec[k]
            wn[node, 6] = radius
            wn[node, 7] = area_vec.norm()
            for k in ti.static(range(3)):
                tris[i, 10 + k] = centre[k]
                tris[i, 13 + k] = 0.0
            tris[i, 13] = radius

    @ti.func
    def refit_node(i, nodes: ti.template(), box: ti.template(), wn: ti.template()):
        """Combines the children of internal node i (Karras numbering)."""
        l = nodes[i, 0]
        r = nodes[i, 1]
        lo = ti.min(vec3(box[l, 0], box[l, 1], box[l, 2]), vec3(box[r, 0], box[r, 1], box[r, 2]))
        hi = ti.max(vec3(box[l, 3], box[l, 4], box[l, 5]), vec3(box[r, 3], box[r, 4], box[r, 5]))
        cl = vec3(wn[l, 0], wn[l, 1], wn[l, 2])
        cr = vec3(wn[r, 0], wn[r, 1], wn[r, 2])
        al = wn[l, 7]
        ar = wn[r, 7]
        area = al + ar
        centre = 0.5 * (cl + cr)
        if area > 0.0:
            centre = (al * cl + ar * cr) / area
        # Two upper bounds on the distance of any triangle point from the centre; keep the tighter.
        rad = ti.max(wn[l, 6] + (cl - centre).norm(), wn[r, 6] + (cr - centre).norm())
        far = ti.max(ti.abs(lo - centre), ti.abs(hi - centre))
        rad = ti.min(rad, far.norm())
        for a in ti.static(range(3)):
            box[i, a] = lo[a]
            box[i, 3 + a] = hi[a]
            wn[i, a] = centre[a]
            wn[i, 3 + a] = wn[l, 3 + a] + wn[r, 3 + a]
        wn[i, 6] = rad
        wn[i, 7] = area

    @ti.kernel
    def refit_level(level_nodes: _i32_1, start: ti.i32, count: ti.i32, nodes: _i32_2, box: f_2, wn: f_2):
        for k in range(count):
            refit_node(level_nodes[start + k], nodes, box, wn)

    @ti.kernel
    def refit_all(nodes: _i32_2, parent: _i32_1, visits: _i32_1, box: f_2, wn: f_2):
        # One launch for the whole tree: a thread per leaf walks up; the first child to arrive at a
        # parent stops, the second (whose sibling is then complete) refits it and goes on. The
        # atomic increment orders the sibling's writes before the read (sequentially consistent
        # atomics on CPU; GPUs use refit_level instead, see the caller).
        n = (nodes.shape[0] + 1) // 2
        for leaf in range(n):
            node = parent[n - 1 + leaf]
            while node >= 0:
                if ti.atomic_add(visits[node], 1) == 0:
                    break
                refit_node(node, nodes, box, wn)
                node = parent[node]

    @ti.kernel
    def to_preorder(pre: _i32_1, nodes_k: _i32_2, box_k: f_2, wn_k: f_2, nodes: _i32_2, box: f_2, wn: f_2):
        for i in range(nodes_k.shape[0]):
            j = pre[i]
            left = nodes_k[i, 0]
            right = nodes_k[i, 1]
            nodes[j, 0] = -1
            nodes[j, 1] = -1
            if left >= 0:
                nodes[j, 0] = pre[left]
                nodes[j, 1] = pre[right]
            nodes[j, 2] = nodes_k[i, 2]
            nodes[j, 3] = nodes_k[i, 3]
            for k in ti.static(range(6)):
                box[j, k] = box_k[i, k]
            for k in ti.static(range(3)):
                wn[j, k] = wn_k[i, k]  # centre
                wn[j, 4 + k] = wn_k[i, 3 + k]  # area vector
            wn[j, 3] = wn_k[i, 6]  # radius
            wn[j, 7] = wn_k[i, 7]  # total area

    return morton, init_leaves, refit_level, to_preorder, refit_all


# ------------------------------------------------------------------------------------------------
# Queries
# ------------------------------------------------------------------------------------------------


@functools.cache
def _query_funcs(dtype: str):
    """The @ti.funcs of the queries, specialised to one float type (so that literals and local
    vectors keep float64 precision in the f64 variant)."""
    f = ti_float(dtype)
    vec3 = ti.types.vector(3, f)
    tiny = 1e-30  # guards 0/0 on degenerate (zero-length edge) triangles

    @ti.func
    def closest_on_triangle(p, a, b, c):
        """Closest point to p on triangle abc (Ericson, Real-Time Collision Detection 5.1.5).
        Returns (barycentric weights of a, b, c as a vector, region code)."""
        ab = b - a
        ac = c - a
        ap = p - a
        d1 = ab.dot(ap)
        d2 = ac.dot(ap)
        bary = vec3(1.0, 0.0, 0.0)
        region = REGION_A
        if d1 <= 0.0 and d2 <= 0.0:
            pass
        else:
            bp = p - b
            d3 = ab.dot(bp)
            d4 = ac.dot(bp)
            if d3 >= 0.0 and d4 <= d3:
                bary = vec3(0.0, 1.0, 0.0)
                region = REGION_B
            else:
                vc = d1 * d4 - d3 * d2
                if vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:
                    v = d1 / ti.max(d1 - d3, tiny)
                    bary = vec3(1.0 - v, v, 0.0)
                    region = REGION_AB
                else:
                    cp = p - c
                    d5 = ab.dot(cp)
                    d6 = ac.dot(cp)
                    if d6 >= 0.0 and d5 <= d6:
                        bary = vec3(0.0, 0.0, 1.0)
                        region = REGION_C
                    else:
                        vb = d5 * d2 - d1 * d6
                        if vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:
                            w = d2 / ti.max(d2 - d6, tiny)
                            bary = vec3(1.0 - w, 0.0, w)
                            region = REGION_CA
                        else:
                            va = d3 * d6 - d5 * d4
                            if va <= 0.0 and (d4 - d3) >= 0.0 and (d5 - d6) >= 0.0:
                                w = (d4 - d3) / ti.max((d4 - d3) + (d5 - d6), tiny)
                                bary = vec3(0.0, 1.0 - w, w)
                                region = REGION_BC
                            else:
                                denom = 1.0 / ti.max(va + vb + vc, tiny)
                                v = vb * denom
                                w = vc * denom
                                bary = vec3(1.0 - v - w, v, w)
                                region = REGION_FACE
        return bary, region

    @ti.func
    def on_segment(p, x, y):
        """Parameter s in [0, 1] of the closest point x + s (y - x) to p, and its squared distance."""
        xy = y - x
        s = ti.min(ti.max(xy.dot(p - x) / ti.max(xy.norm_sqr(), tiny), 0.0), 1.0)
        return s, (p - (x + s * xy)).norm_sqr()

    @ti.func
    def closest_on_segments(p, a, b, c):
        """Closest point to p on the edges ab, bc, ca (for degenerate triangles): (barycentrics,
        region)."""
        s_ab, d_ab = on_segment(p, a, b)
        s_bc, d_bc = on_segment(p, b, c)
        s_ca, d_ca = on_segment(p, c, a)
        bary = vec3(1.0 - s_ab, s_ab, 0.0)
        region = REGION_AB
        if d_bc < d_ab and d_bc <= d_ca:
            bary = vec3(0.0, 1.0 - s_bc, s_bc)
            region = REGION_BC
        elif d_ca < d_ab:
            bary = vec3(s_ca, 0.0, 1.0 - s_ca)
            region = REGION_CA
        return bary, region

    @ti.func
    def closest_on_tri(p, tris: ti.template(), t):
        """Corners a, b, c of triangle t, barycentrics of its closest point to p, region."""
        a, b, c = load_tri(tris, t)
        bary = vec3(1.0, 0.0, 0.0)
        region = REGION_A
        if tris[t, 9] != 0.0:
            bary, region = closest_on_segments(p, a, b, c)
        else:
            bary, region = closest_on_triangle(p, a, b, c)
        return a, b, c, bary, region

    @ti.func
    def sphere_beyond(p, tris: ti.template(), t, dist):
        """Whether triangle t's bounding sphere lies at least `dist` away from p."""
        e = vec3(tris[t, 10], tris[t, 11], tris[t, 12]) - p
        reach = tris[t, 13] + dist
        return e.norm_sqr() >= reach * reach

    @ti.func
    def load_tri(tris: ti.template(), t):
        a = vec3(tris[t, 0], tris[t, 1], tris[t, 2])
        b = vec3(tris[t, 3], tris[t, 4], tris[t, 5])
        c = vec3(tris[t, 6], tris[t, 7], tris[t, 8])
        return a, b, c

    @ti.func
    def box_dist2(box: ti.template(), node, p):
        d2 = ti.cast(0.0, f)
        for k in ti.static(range(3)):
            e = ti.max(box[node, k] - p[k], ti.max(p[k] - box[node, 3 + k], 0.0))
            d2 += e * e
        return d2

    @ti.func
    def closest_search(p, box: ti.template(), nodes: ti.template(), tris: ti.template(), best, best_t, best_bary, best_region):  # fmt: skip
        """Nearest triangle to p: depth-first, nearest child first, pruning nodes whose box is
        farther than the best distance so far. (best, best_t, best_bary, best_region) seed the
        search (best_t = -1: no seed). Returns the same four: squared distance, triangle (Morton
        order), barycentrics, region."""
        stack = ti.Vector([0] * STACK_SIZE, ti.i32)
        stack_d = ti.Vector([0.0] * STACK_SIZE, f)
        best_d = ti.sqrt(best)
        sp = 1
        while sp > 0:
            sp -= 1
            node = stack[sp]
            if best_t < 0 or stack_d[sp] < best:
                first = nodes[node, 2]
                last = nodes[node, 3]
                if last - first < LEAF_SIZE:
                    for t in range(first, last + 1):
                        if best_t < 0 or not sphere_beyond(p, tris, t, best_d):
                            a, b, c, bary, region = closest_on_tri(p, tris, t)
                            d2 = (p - (bary[0] * a + bary[1] * b + bary[2] * c)).norm_sqr()
                            if best_t < 0 or d2 < best:
                                best = d2
                                best_d = ti.sqrt(d2)
                                best_t = t
                                best_bary = bary
                                best_region = region
                else:
                    near = nodes[node, 0]
                    far = nodes[node, 1]
                    dn = box_dist2(box, near, p)
                    df = box_dist2(box, far, p)
                    if dn > df:
                        near, far = far, near
                        dn, df = df, dn
                    if best_t < 0 or df < best:
                        stack[sp] = far
                        stack_d[sp] = df
                        sp += 1
                    if best_t < 0 or dn < best:
                        stack[sp] = near
                        stack_d[sp] = dn
                        sp += 1
        return best, best_t, best_bary, best_region

    @ti.func
    def solid_angle(p, a, b, c):
        """Signed solid angle of triangle abc seen from p (Van Oosterom & Strackee 1983)."""
        x = a - p
        y = b - p
        z = c - p
        lx = x.norm()
        ly = y.norm()
        lz = z.norm()
        num = x.dot(y.cross(z))
        den = lx * ly * lz + x.dot(y) * lz + y.dot(z) * lx + z.dot(x) * ly
        return 2.0 * ti.atan2(num, den)

    @ti.func
    def winding(p, nodes: ti.template(), tris: ti.template(), wn: ti.template(), beta, seed: ti.template()):
        """Generalised winding number at p. Nodes whose expansion centre is farther than
        beta * radius contribute their dipole term (Barill et al. 2018); the others are
        opened, down to exact solid angles in the leaves. beta <= 0 means exact.

        Stackless: nodes are in pre-order, so a node's first child is node + 1 and the node after
        its subtree (of k triangles) is node + 2k - 1. With `seed` (compile-time), the triangles
        evaluated exactly are also tested for the closest point, and (w, best d^2, triangle,
        barycentrics, region) is returned to seed `closest_search`; else just w."""
        total = ti.cast(0.0, f)
        beta2 = beta * beta
        best = ti.cast(math.inf, f)
        best_d = ti.cast(math.inf, f)
        best_t = -1
        best_bary = vec3(1.0, 0.0, 0.0)
        best_region = REGION_A
        node = 0
        n_nodes = nodes.shape[0]
        while node < n_nodes:
            first = nodes[node, 2]
            last = nodes[node, 3]
            skip = node + 2 * (last - first) + 1
            dv = vec3(wn[node, 0], wn[node, 1], wn[node, 2]) - p
            d2 = dv.norm_sqr()
            rad = wn[node, 3]
            if beta > 0.0 and d2 > beta2 * rad * rad:
                # Dipole: the node's area vector A at its centre c subtends A.(c - p) / |c - p|^3.
                area_vec = vec3(wn[node, 4], wn[node, 5], wn[node, 6])
                total += area_vec.dot(dv) / (d2 * ti.sqrt(d2))
                node = skip
            elif last - first < WINDING_LEAF_SIZE:
                for t in range(first, last + 1):
                    if ti.static(not seed):
                        a, b, c = load_tri(tris, t)
                        total += solid_angle(p, a, b, c)
                    else:
                        a, b, c = load_tri(tris, t)
                        total += solid_angle(p, a, b, c)
                        if best_t < 0 or not sphere_beyond(p, tris, t, best_d):
                            _, _, _, bary, region = closest_on_tri(p, tris, t)
                            dt = (p - (bary[0] * a + bary[1] * b + bary[2] * c)).norm_sqr()
                            if best_t < 0 or dt < best:
                                best = dt
                                best_d = ti.sqrt(dt)
                                best_t = t
                                best_bary = bary
                                best_region = region
                node = skip
            else:
                node += 1
        w = total * _INV_4PI
        if ti.static(seed):
            return w, best, best_t, best_bary, best_region
        else:
            return w

    return closest_on_triangle, closest_search, winding, load_tri


@functools.cache
def closest_triangle_func(dtype: str):
    """`@ti.func closest_on_triangle(p, a, b, c) -> (barycentrics [3], region)` for other kernels
    (Ericson's region walk: exact for proper triangles; a triangle with a zero-length edge gets a
    corner instead of the closest point on its remaining segment, see `SLIVER`)."""
    return _query_funcs(dtype)[0]


@functools.cache
def query_kernel(dtype: str, sign_mode: str):
    """Closest point + sign for each query point.

    query(points [N, 3], order [N] i32, box [M, 6], nodes [M, 4], tris [n, 16], tri_face [n],
          tri_bary [n, 9], wn [M, 8], pn [F, 21] (or [1, 21] unless sign_mode == "pseudonormal"),
          sdf [N], closest [N, 3], face_id [N] i32, bary [N, 3], normal [N, 3],
          winding [N] (or [1] unless sign_mode == "winding"), beta_fast, beta)

    Queries are visited in the order `order` (a Morton order makes neighbouring threads share
    cache lines and tree paths). sdf is negative inside (unsigned for sign_mode "none"); normal is
    the unit gradient of sdf, sign * (p - closest) / |p - closest|, or the closest face's unit
    normal for points on the surface; face_id is the original face index; bary the closest
    point's barycentric weights in that face.

    Winding sign: w is first evaluated with `beta_fast`; only where |w| is ambiguous (between
    0.25 and 0.75, which on a watertight mesh means the fast estimate erred by > 0.25) is it
    evaluated again with `beta` (<= 0: exact). Inside where |w| > 0.5. The triangles that the
    winding pass evaluates exactly are the ones next to p, so they also seed the closest-point
    search with a tight bound.
    """
    if sign_mode not in SIGN_MODES:
        raise ValueError(f"sign_mode: expected one of {SIGN_MODES}, got {sign_mode!r}")
    f = ti_float(dtype)
    f_1 = ti.types.ndarray(dtype=f, ndim=1)
    f_2 = ti.types.ndarray(dtype=f, ndim=2)
    vec3 = ti.types.vector(3, f)
    _, closest_search, winding, load_tri = _query_funcs(dtype)

    @ti.func
    def to_face(tri_bary: ti.template(), t, bc, region):
        """Barycentrics and region w.r.t. the original face of the closest point on piece t (whose
        corners have face barycentrics tri_bary[t]). A face coordinate is non-zero iff a piece
        corner that the region uses has it non-zero, which keeps the region exact."""
        ob = vec3(0.0, 0.0, 0.0)
        nz = ti.Vector([0, 0, 0], ti.i32)
        for k in ti.static(range(3)):
            corner = vec3(tri_bary[t, 3 * k], tri_bary[t, 3 * k + 1], tri_bary[t, 3 * k + 2])
            ob += bc[k] * corner
            used = region == REGION_FACE
            if ti.static(k == 0):
                used = used or region == REGION_A or region == REGION_AB or region == REGION_CA
            elif ti.static(k == 1):
                used = used or region == REGION_B or region == REGION_AB or region == REGION_BC
            else:
                used = used or region == REGION_C or region == REGION_BC or region == REGION_CA
            if used:
                for j in ti.static(range(3)):
                    if corner[j] != 0.0:
                        nz[j] = 1
        face_region = REGION_FACE
        used_corners = nz[0] + nz[1] + nz[2]
        if used_corners == 1:
            face_region = REGION_C
            if nz[0] == 1:
                face_region = REGION_A
            elif nz[1] == 1:
                face_region = REGION_B
        elif used_corners == 2:
            face_region = REGION_AB
            if nz[0] == 0:
                face_region = REGION_BC
            elif nz[1] == 0:
                face_region = REGION_CA
        return ob, face_region

    @ti.kernel
    def query(
        points: f_2, order: _i32_1, box: f_2, nodes: _i32_2, tris: f_2, tri_face: _i32_1, tri_bary: f_2,
        wn: f_2, pn: f_2, sdf: f_1, closest: f_2, face_id: _i32_1, bary: f_2, normal: f_2,
        winding_out: f_1, beta_fast: f, beta: f,
    ):  # fmt: skip
        for k in range(points.shape[0]):
            q = order[k]
            p = vec3(points[q, 0], points[q, 1], points[q, 2])
            sign = ti.cast(1.0, f)
            seed_d2 = ti.cast(math.inf, f)
            seed_t = -1
            seed_bary = vec3(1.0, 0.0, 0.0)
            seed_region = REGION_A
            if ti.static(sign_mode == "winding"):
                w, seed_d2, seed_t, seed_bary, seed_region = winding(p, nodes, tris, wn, beta_fast, True)
                if beta_fast != beta and ti.abs(w) > 0.25 and ti.abs(w) < 0.75:
                    w = winding(p, nodes, tris, wn, beta, False)
                winding_out[q] = w
                if ti.abs(w) > 0.5:
                    sign = -1.0
            d2, t, bc, piece_region = closest_search(p, box, nodes, tris, seed_d2, seed_t, seed_bary, seed_region)
            a, b, c = load_tri(tris, t)
            cp = bc[0] * a + bc[1] * b + bc[2] * c
            dist = ti.sqrt(d2)
            ob, region = to_face(tri_bary, t, bc, piece_region)
            fid = tri_face[t]
            if ti.static(sign_mode == "pseudonormal"):
                pseudo = vec3(pn[fid, 3 * region], pn[fid, 3 * region + 1], pn[fid, 3 * region + 2])
                if (p - cp).dot(pseudo) < 0.0:
                    sign = -1.0
            g = p - cp
            if d2 > 0.0:
                g = sign * g / dist
            else:
                nrm = (b - a).cross(c - a)
                nn = nrm.norm()
                g = nrm * 0.0
                if nn > 0.0:
                    g = nrm / nn
            sdf[q] = sign * dist
            face_id[q] = fid
            for j in ti.static(range(3)):
                closest[q, j] = cp[j]
                bary[q, j] = ob[j]
                normal[q, j] = g[j]

    return query


@functools.cache
def point_morton_kernel(dtype: str):
    """morton(points [N, 3], codes [N], lo_x, lo_y, lo_z, scale_x, scale_y, scale_z): the Morton
    code of each point (same quantisation as the triangle centroids'), to sort queries."""
    return build_kernels(dtype)[0]


@functools.cache
def winding_kernel(dtype: str):
    """winding(points [N, 3], order [N] i32, nodes [M, 4], tris [n, 16], wn [M, 8], out [N], beta):
    generalised winding number (beta <= 0: exact sum of solid angles), visiting points in `order`."""
    f = ti_float(dtype)
    f_1 = ti.types.ndarray(dtype=f, ndim=1)
    f_2 = ti.types.ndarray(dtype=f, ndim=2)
    vec3 = ti.types.vector(3, f)
    _, _, winding, _ = _query_funcs(dtype)

    @ti.kernel
    def winding_number(points: f_2, order: _i32_1, nodes: _i32_2, tris: f_2, wn: f_2, out: f_1, beta: f):
        for k in range(points.shape[0]):
            q = order[k]
            p = vec3(points[q, 0], points[q, 1], points[q, 2])
            out[q] = winding(p, nodes, tris, wn, beta, False)

    return winding_number
