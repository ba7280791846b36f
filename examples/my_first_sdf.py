"""Prototype a new SDF as a @ti.func and get depth, normals and gradients for free.

    python examples/my_first_sdf.py      # writes my_first_sdf.png and prints d(mean depth)/d(params)
"""

import sys
from pathlib import Path

import taichi as ti
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import taichi_sdf  # noqa: E402
from taichi_sdf import cameras  # noqa: E402
from taichi_sdf import viz as shading
from taichi_sdf.data.image_io import write_image  # noqa: E402
from taichi_sdf.implicit.fields import TaichiField  # noqa: E402
from taichi_sdf.implicit.sphere_trace import sphere_trace  # noqa: E402
from taichi_sdf.kernels.implicit import sdf_lib as L  # noqa: E402

PARAMS = [0.5, 0.12, 0.2]  # torus radii, box half-size (read by `python -m apps.view examples/my_first_sdf.py`)
BOUND_RADIUS = 1.0


@ti.func
def twisted_ring(p, params: ti.template()):
    """A torus (radii params[0], params[1]) smoothly joined with a box of half-size params[2]."""
    ring = L.sd_torus(p, params[0], params[1])
    box = L.sd_box(p, ti.Vector([params[2], params[2], params[2]]))
    return L.op_smooth_union(ring, box, 0.125)


def main():
    taichi_sdf.init()
    dev = taichi_sdf.device()
    params = torch.tensor(PARAMS, device=dev, requires_grad=True)
    field = TaichiField(twisted_ring, params, bound_radius=1.0, name="twisted_ring")
    cam = cameras.look_at(torch.tensor([[1.2, 1.4, 1.8]]), width=256, height=256).to(dev, torch.float32)
    o, d = (x.reshape(-1, 3) for x in cam.image_rays())
    r = sphere_trace(field, o, d)
    r.t[r.hit].mean().backward()
    print("d(mean hit distance)/d(params) =", params.grad.tolist())
    img = shading.lambert(r.normals.detach(), r.hit, albedo=(0.3, 0.6, 0.9)).reshape(256, 256, 3)
    write_image("my_first_sdf.png", img)
    print("wrote my_first_sdf.png")


if __name__ == "__main__":
    main()
