"""Orbit camera controller: a target point, a distance and two angles, turned into a `Camera`.

Angles follow `taichi_sdf.cameras.camera.orbit_cameras`: the eye sits at
`target + distance * (cos(el) sin(az), sin(el), cos(el) cos(az))`, +y is up in the image, so
`OrbitController(azimuth_deg=a, elevation_deg=e).camera(W, H)` equals `orbit_cameras(...)` at that
azimuth. Mouse moves come in window fractions with y upward (ti.GUI's convention), and the scene
follows the mouse: dragging right turns the object to the right (the eye moves left), dragging up
tips its front upward (the eye moves down), panning drags the object along with the cursor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from taichi_sdf.cameras.camera import Camera, look_at

MAX_ELEVATION = math.radians(89.0)


@dataclass
class OrbitController:
    target: np.ndarray = field(default_factory=lambda: np.zeros(3))
    distance: float = 2.75
    azimuth: float = 0.0  # radians
    elevation: float = math.radians(20.0)  # radians
    fov_x_deg: float = 40.0
    orbit_speed: float = math.pi  # radians per window width (or height) dragged
    zoom_factor: float = 0.9  # distance multiplier per wheel notch toward the screen
    min_distance: float = 1e-3
    max_distance: float = 1e3

    def __post_init__(self) -> None:
        self.target = np.asarray(self.target, dtype=np.float64).reshape(3).copy()
        self.elevation = float(np.clip(self.elevation, -MAX_ELEVATION, MAX_ELEVATION))

    @classmethod
    def from_degrees(cls, azimuth_deg=0.0, elevation_deg=20.0, **kw) -> OrbitController:
        return cls(azimuth=math.radians(azimuth_deg), elevation=math.radians(elevation_deg), **kw)

    @classmethod
    def from_eye(cls, eye, target=(0.0, 0.0, 0.0), fov_x_deg: float = 40.0) -> OrbitController:
        """The orbit state that looks from `eye` at `target` (+y up)."""
        eye, target = np.asarray(eye, dtype=np.float64), np.asarray(target, dtype=np.float64)
        v = eye - target
        r = float(np.linalg.norm(v))
        if r < 1e-12:
            raise ValueError("eye, target: the camera sits on its target")
        el = math.asin(max(-1.0, min(1.0, v[1] / r)))
        az = math.atan2(v[0], v[2])
        return cls(target=target, distance=r, azimuth=az, elevation=el, fov_x_deg=fov_x_deg)

    # -- state ------------------------------------------------------------------------------------------

    def state(self) -> tuple:
        """A hashable snapshot (to detect camera motion between frames)."""
        return (*np.round(self.target, 12).tolist(), round(self.distance, 12), round(self.azimuth, 12),
                round(self.elevation, 12), self.fov_x_deg)  # fmt: skip

    def eye(self) -> np.ndarray:
        ce = math.cos(self.elevation)
        offset = np.array([ce * math.sin(self.azimuth), math.sin(self.elevation), ce * math.cos(self.azimuth)])
        return self.target + self.distance * offset

    def camera(self, width: int, height: int) -> Camera:
        """The pinhole camera (float64, CPU) of this state for a `width x height` image."""
        return look_at(torch.tensor(self.eye())[None], tuple(self.target), (0.0, 1.0, 0.0), width, height, self.fov_x_deg)

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Camera right (x), down (y) and forward (z) axes in world coordinates."""
        R = self.camera(2, 2).R[0].numpy()
        return R[0], R[1], R[2]

    # -- mouse --------------------------------------------------------------------------------------------

    def orbit(self, dx: float, dy: float) -> None:
        """Drag by (dx, dy) window fractions (y up): the object turns with the cursor."""
        self.azimuth = (self.azimuth - dx * self.orbit_speed) % (2 * math.pi)
        self.elevation = float(np.clip(self.elevation - dy * self.orbit_speed, -MAX_ELEVATION, MAX_ELEVATION))

    def zoom(self, notches: float) -> None:
        """Wheel: positive notches (away from the user) move the eye toward the target."""
        log_d = math.log(self.distance) + notches * math.log(self.zoom_factor)
        self.distance = float(np.clip(math.exp(min(log_d, 700.0)), self.min_distance, self.max_distance))

    def pan(self, dx: float, dy: float, aspect: float = 1.0) -> None:
        """Drag by (dx, dy) window fractions (y up) moving the target so that the point under the
        cursor at the target's depth stays under it; `aspect` = height / width."""
        right, down, _ = self.axes()
        width_world = 2 * self.distance * math.tan(math.radians(self.fov_x_deg) / 2)
        self.target = self.target - right * dx * width_world + down * dy * width_world * aspect

    # -- printing -----------------------------------------------------------------------------------------

    def describe(self, width: int, height: int) -> str:
        """K, T_cam_world, and lines to paste back (viewer flags and a `taichi_sdf.look_at` call)."""
        cam = self.camera(width, height)
        eye = ", ".join(f"{x:.6g}" for x in self.eye())
        tgt = ", ".join(f"{x:.6g}" for x in self.target)
        with np.printoptions(precision=6, suppress=True):
            return (
                f"K =\n{cam.K[0].numpy()}\nT_cam_world =\n{cam.T_cam_world[0].numpy()}\n"
                f"viewer flags: --eye {eye.replace(' ', '')} --target {tgt.replace(' ', '')} --fov {self.fov_x_deg:g}\n"
                f"python: taichi_sdf.look_at([[{eye}]], ({tgt}), (0.0, 1.0, 0.0), {width}, {height}, {self.fov_x_deg:g})"
            )
