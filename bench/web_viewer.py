"""Browser-viewer benchmark: frame times of the web viewer and the cost of the live training view.

    python -m bench.web_viewer frames SOURCE [SOURCE ...] [--sizes 256 512] [--frames 8]
    python -m bench.web_viewer live [--iterations 120] [--repeat 1] [key=value ...]      (IDR, configs/idr/cpu.yaml)

`frames`: for each SOURCE, renders through `WebViewer.render_image` at viser cameras on an orbit (the
browser's camera converted by `taichi_sdf.cameras.viser_camera`), "moving" at 1/4 of the width (what the
viewer sends while the camera moves) and "still" at the full width; prints the median per case.

`live`: trains IDR for `--iterations` three times in this process: viewer off; `viewer=true` with no
browser; `viewer=true` with a client connected. The client is a separate process that speaks viser's
websocket protocol and reports a camera that moves every 0.1 s, as a browser on the user's own
machine would (a real browser renders WebGL on that machine, not on the training server). Prints it/s
of each (wall clock, and per CPU-second of this process, which a loaded machine disturbs less) and the
share of the run the live view spent rendering.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import socket
import subprocess
import sys
import time

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frames(args) -> None:
    from apps.viewer.controller import OrbitController
    from apps.viewer.render import Renderer
    from apps.viewer.web import WebViewer
    from taichi_sdf.cameras.viser_camera import camera_from_viser, vertical_fov, viser_pose

    rows = []
    for source in args.sources:
        t0 = time.perf_counter()
        v = WebViewer(Renderer(source), port=free_port(), size=max(args.sizes), mesh_resolution=0, verbose=False)
        load = time.perf_counter() - t0
        ctrl = OrbitController.from_degrees(30, 20)
        for size in args.sizes:
            for moving, width in ((True, size // 4), (False, size)):
                times = []
                for i in range(args.frames + 1):  # +1: the first frame of a new size may compile / warm caches
                    ctrl.azimuth = math.radians(30 + 360 * i / args.frames)
                    c = ctrl.camera(64, 64)
                    wxyz, pos = viser_pose(c)
                    t = time.perf_counter()
                    v.render_image(camera_from_viser(pos, wxyz, vertical_fov(c), width, width), moving)
                    times.append(time.perf_counter() - t)
                rows.append((source, f"{size}^2", "moving" if moving else "still", f"{width}x{width}",
                             1e3 * float(np.median(times[1:]))))  # fmt: skip
                print(f"# {rows[-1][:4]}: {rows[-1][4]:.0f} ms", flush=True)  # a slow source's rows survive a timeout
        v.stop()
        print(f"# {source}: loaded + warm-up in {load:.1f} s", flush=True)
    print("| source | size | camera | rendered | median ms |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.0f} |")


async def _client(port: int, seconds: float) -> None:
    import msgspec
    import torch
    import viser
    import websockets

    from taichi_sdf.cameras.camera import look_at
    from taichi_sdf.cameras.viser_camera import viser_pose

    for _ in range(600):  # the run's server starts with `train()`: wait for it
        try:
            ws = await websockets.connect(f"ws://127.0.0.1:{port}", subprotocols=[f"viser-v{viser.__version__}"], max_size=None)
            break
        except OSError:
            await asyncio.sleep(0.05)
    else:
        raise SystemExit(f"client: no server on port {port}")
    async with ws:
        t0 = time.time()
        received = 0
        while time.time() - t0 < seconds:
            az = 0.5 * (time.time() - t0)  # keeps moving: the live view renders coarse within its budget
            pos = [2.5 * math.sin(az), 0.8, 2.5 * math.cos(az)]
            wxyz, _ = viser_pose(look_at(torch.tensor([pos], dtype=torch.float64)))
            msg = {"type": "ViewerCameraMessage", "wxyz": [float(x) for x in wxyz], "position": pos, "fov": 0.7,
                   "near": 0.01, "far": 100.0, "image_height": 600, "image_width": 800, "look_at": [0.0, 0.0, 0.0],
                   "up_direction": [0.0, 1.0, 0.0]}  # fmt: skip
            try:
                await ws.send(msgspec.msgpack.encode(msg))
                while True:
                    await asyncio.wait_for(ws.recv(), 0.1)
                    received += 1
            except asyncio.TimeoutError:
                pass
            except websockets.ConnectionClosed:  # the run ended
                break
        print(f"client: {received} messages received", flush=True)


def live(args) -> None:
    import taichi_sdf
    from apps.idr.config import IDRConfig
    from apps.idr.trainer import IDRTrainer
    from taichi_sdf.train.config import load_config
    from taichi_sdf.train.live import LiveView

    taichi_sdf.init("cpu")
    taichi_sdf.core.runtime.set_torch_threads(0)
    results = []
    runs = ("viewer off", "viewer=true, no client", "viewer=true, client moving the camera") * args.repeat
    for name in runs:  # interleaved: a loaded machine's drift spreads over every case
        port = free_port()
        over = [*args.overrides, f"out=/tmp/web_bench_live_{len(results)}", f"viewer={name != 'viewer off'}", f"viewer_port={port}"]
        trainer = IDRTrainer(load_config(IDRConfig, "configs/idr/cpu.yaml", over), mode="overwrite")
        trainer.train(iterations=5, progress=False)  # warm-up: kernels compiled, caches filled
        client = None
        if "client" in name and "no client" not in name:
            client = subprocess.Popen([sys.executable, "-m", "bench.web_viewer", "client", str(port), "600"])
        stats = {}
        real_close = LiveView.close

        def close(self, stats=stats, real_close=real_close):
            stats.update(renders=self.renders, view_seconds=self.view_seconds, wall=time.perf_counter() - self._start)
            real_close(self)

        LiveView.close = close
        t0, c0 = time.perf_counter(), time.process_time()
        trainer.train(iterations=args.iterations, progress=False)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        LiveView.close = real_close
        if client is not None:
            client.kill()
            client.wait()
        share = stats.get("view_seconds", 0.0) / stats["wall"] if stats.get("wall") else 0.0
        results.append((name, args.iterations / dt, args.iterations / cpu, stats.get("renders", 0), share))
    base = float(np.mean([r[1] for r in results if r[0] == "viewer off"]))
    base_cpu = float(np.mean([r[2] for r in results if r[0] == "viewer off"]))
    print("| run | it/s (wall) | vs off | it per CPU-s (this process) | vs off | live renders | render share of wall |\n"
          "|---|---|---|---|---|---|---|")  # fmt: skip
    for name, its, its_cpu, renders, share in results:
        print(f"| {name} | {its:.2f} | {its / base - 1:+.1%} | {its_cpu:.2f} | {its_cpu / base_cpu - 1:+.1%} | {renders} | {share:.1%} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("frames")
    f.add_argument("sources", nargs="+")
    f.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    f.add_argument("--frames", type=int, default=8)
    lv = sub.add_parser("live")
    lv.add_argument("--iterations", type=int, default=120)
    lv.add_argument("--repeat", type=int, default=1, help="rounds of the three runs")
    lv.add_argument("overrides", nargs="*")
    c = sub.add_parser("client")
    c.add_argument("port", type=int)
    c.add_argument("seconds", type=float)
    args = ap.parse_args()
    if args.cmd == "frames":
        frames(args)
    elif args.cmd == "live":
        live(args)
    else:
        asyncio.run(_client(args.port, args.seconds))


if __name__ == "__main__":
    main()
