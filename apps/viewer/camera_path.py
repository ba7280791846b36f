"""A recorded camera path of the browser viewer: keyframes (position, orientation, vertical field of
view) saved as JSON, replayed or rendered with interpolation (linear positions and fov, slerp rotations).

JSON layout: `{"version": 1, "keyframes": [{"position": [x, y, z], "wxyz": [w, x, y, z], "fov_y": rad}, ...]}`;
orientations are viser's camera-to-world quaternions (OpenCV axes, see `taichi_sdf.cameras.viser_camera`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Keyframe", "CameraPath", "slerp"]


@dataclass(frozen=True)
class Keyframe:
    position: tuple[float, float, float]
    wxyz: tuple[float, float, float, float]
    fov_y: float  # radians


def slerp(q0, q1, s: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions `[4]` at s in [0, 1] (the short way round)."""
    q0, q1 = np.asarray(q0, dtype=np.float64), np.asarray(q1, dtype=np.float64)
    q0, q1 = q0 / np.linalg.norm(q0), q1 / np.linalg.norm(q1)
    dot = float(q0 @ q1)
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: linear, renormalised
        q = q0 + s * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(dot)
    return (math.sin((1 - s) * theta) * q0 + math.sin(s * theta) * q1) / math.sin(theta)


@dataclass
class CameraPath:
    keyframes: list[Keyframe] = field(default_factory=list)

    def add(self, position, wxyz, fov_y: float) -> Keyframe:
        k = Keyframe(tuple(float(v) for v in np.asarray(position).reshape(3)),
                     tuple(float(v) for v in np.asarray(wxyz).reshape(4)), float(fov_y))  # fmt: skip
        self.keyframes.append(k)
        return k

    def clear(self) -> None:
        self.keyframes.clear()

    def __len__(self) -> int:
        return len(self.keyframes)

    def to_json(self) -> str:
        frames = [{"position": list(k.position), "wxyz": list(k.wxyz), "fov_y": k.fov_y} for k in self.keyframes]
        return json.dumps({"version": 1, "keyframes": frames}, indent=1)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_json(cls, text: str, where: str = "camera path") -> CameraPath:
        try:
            data = json.loads(text)
            frames = data["keyframes"]
            keys = [Keyframe(tuple(map(float, f["position"])), tuple(map(float, f["wxyz"])), float(f["fov_y"])) for f in frames]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{where}: expected JSON {{\"keyframes\": [{{\"position\", \"wxyz\", \"fov_y\"}}, ...]}} "
                             f"({type(exc).__name__}: {exc})") from None  # fmt: skip
        for i, k in enumerate(keys):
            if len(k.position) != 3 or len(k.wxyz) != 4 or not 0 < k.fov_y < math.pi:
                raise ValueError(f"{where}: keyframe {i}: expected position [3], wxyz [4] and fov_y in (0, pi) radians")
        return cls(keys)

    @classmethod
    def load(cls, path: str | Path) -> CameraPath:
        path = Path(path)
        return cls.from_json(path.read_text(), str(path))

    def interpolate(self, frames: int) -> list[Keyframe]:
        """`frames` keyframes evenly spaced in keyframe index from the first to the last keyframe."""
        if not self.keyframes:
            raise ValueError("camera path: no keyframes recorded")
        if frames < 1:
            raise ValueError(f"frames: expected >= 1, got {frames}")
        ks, out = self.keyframes, []
        for i in range(frames):
            u = (len(ks) - 1) * (i / max(frames - 1, 1))
            j = min(int(u), len(ks) - 2) if len(ks) > 1 else 0
            s = u - j if len(ks) > 1 else 0.0
            a, b = ks[j], ks[min(j + 1, len(ks) - 1)]
            pos = (1 - s) * np.asarray(a.position) + s * np.asarray(b.position)
            out.append(Keyframe(tuple(pos.tolist()), tuple(slerp(a.wxyz, b.wxyz, s).tolist()), (1 - s) * a.fov_y + s * b.fov_y))
        return out
