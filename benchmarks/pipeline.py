#!/usr/bin/env python3
"""Per-stage wall time and peak RSS of the full Rerender workflow in a real, headless ComfyUI.

Runs the shipped ``workflows/rerender_video.json`` (converted through ``/object_info`` by the pack's
scripted-run client) on a fresh ComfyUI server with an empty pack cache: Megamind frames from 1
(frame 0 is black), 48 frames at 256×256, keyframes every K = 8 frames (0, 8, …, 40), the
random-weight SD1.5-layout checkpoint (TAESD VAE) and ControlNet from the harness's
``make_tiny_sd15.py``. Stage times come from the server's ``executing`` websocket events (each
node's time runs until the next node starts); peak RSS is the server process's resident memory,
sampled every 50 ms, highest value within each stage. Prints a table and seconds per output frame.

Run with ComfyUI's Python:
    COMFYUI_ROOT=/path/to/ComfyUI /path/to/comfy-venv/bin/python benchmarks/pipeline.py [--steps 20]

Figures depend heavily on the machine and on what else runs on it; the script says so.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = "tiny_sd15_sd15layout_taesd.safetensors"
CONTROLNET = "tiny_sd15_sd15layout_controlnet.safetensors"
#: Stage of each node class (others: "setup").
STAGES = {"RerenderLoadVideo": "load video", "RerenderEstimateFlow": "flow", "RerenderKeyframeRenderer": "keyframes",
          "RerenderEbSynthPropagate": "propagation", "RerenderTemporalBlend": "blend", "RerenderSaveVideo": "encode",
          "PreviewImage": "preview"}
ORDER = ["load video", "setup", "flow", "keyframes", "propagation", "blend", "encode", "preview"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfy-root", default=os.environ.get("COMFYUI_ROOT"))
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--interval", type=int, default=8, help="keyframe interval K")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps per keyframe")
    parser.add_argument("--skip", type=int, default=1, help="Megamind frames to skip (frame 0 is black)")
    parser.add_argument("--gpu", action="store_true", help="let ComfyUI use a GPU (default: --cpu)")
    parser.add_argument("--keep", action="store_true", help="keep the server's base folder (log, output)")
    args = parser.parse_args()
    if not args.comfy_root:
        parser.error("set COMFYUI_ROOT or --comfy-root")
    return args


class EventStream:
    """The server's websocket (``/ws``) read in a thread (RFC 6455, text frames only)."""

    def __init__(self, url: str, client_id: str, on_event) -> None:
        host, port = url.split("//", 1)[1].split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=None)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += self.sock.recv(1)
        if b" 101 " not in answer.split(b"\r\n")[0]:
            raise RuntimeError(f"websocket refused: {answer[:200]!r}")
        self.on_event = on_event
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _read(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("websocket closed")
            data += chunk
        return data

    def _loop(self) -> None:
        try:
            while True:
                head = self._read(2)
                opcode, length = head[0] & 0x0F, head[1] & 0x7F
                if length == 126:
                    length = struct.unpack(">H", self._read(2))[0]
                elif length == 127:
                    length = struct.unpack(">Q", self._read(8))[0]
                mask = self._read(4) if head[1] & 0x80 else None
                payload = self._read(length)
                if mask:
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                if opcode == 1:
                    self.on_event(json.loads(payload), time.perf_counter())
                elif opcode == 8:
                    return
        except (OSError, ConnectionError):
            return

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class StageMeter:
    """Per-node wall time from ``executing`` events, per-stage peak RSS from a sampling thread."""

    def __init__(self, pid: int, prompt: dict) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.kinds = {node_id: node["class_type"] for node_id, node in prompt.items()}
        self.current: str | None = None
        self.started: float | None = None
        self.node_seconds: dict[str, float] = {}
        self.stage_peak: dict[str, int] = {}
        self.cached: list[str] = []
        self.done = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def stage(self, node_id: str | None) -> str:
        kind = self.kinds.get(node_id or "", "")
        return STAGES.get(kind, "setup")

    def on_event(self, event: dict, now: float) -> None:
        kind, data = event.get("type"), event.get("data", {})
        if kind == "execution_cached":
            self.cached += list(data.get("nodes", []))
        if kind == "executing" or kind in ("execution_success", "execution_error", "execution_interrupted"):
            if self.current is not None:
                self.node_seconds[self.current] = self.node_seconds.get(self.current, 0.0) + now - self.started
            node = data.get("node") if kind == "executing" else None
            self.current, self.started = node, now
            if node is None:  # "executing" with no node, or the prompt's end
                self.done.set()

    def _sample(self) -> None:
        while not self.done.is_set():
            try:
                rss = self.process.memory_info().rss
            except Exception:
                return
            stage = self.stage(self.current) if self.current is not None else "idle"
            self.stage_peak[stage] = max(self.stage_peak.get(stage, 0), rss)
            time.sleep(0.05)

    def table(self) -> list[tuple[str, list[str], float, int]]:
        rows = []
        for stage in ORDER:
            nodes = [n for n in self.node_seconds if self.stage(n) == stage]
            if nodes:
                rows.append((stage, sorted({self.kinds[n] for n in nodes}), sum(self.node_seconds[n] for n in nodes),
                             self.stage_peak.get(stage, 0)))
        return rows


def main() -> int:
    args = parse_args()
    sys.path.insert(0, str(PACK_ROOT))
    from rerender_cli import load_pack

    load_pack()
    from rerender_video.cli import comfy_run
    from rerender_video.tests.comfy_server import ComfyServer, error_message, make_base

    keyframes = list(range(0, args.frames, args.interval))
    workdir = Path(tempfile.mkdtemp(prefix="rerender_pipeline_bench_"))
    base = make_base(workdir / "base", Path(args.comfy_root), [("checkpoints", CHECKPOINT), ("controlnet", CONTROLNET)])
    shutil.copy(PACK_ROOT / "tests" / "data" / "Megamind.avi", base / "input" / "Megamind.avi")
    began = time.perf_counter()
    server = ComfyServer(Path(args.comfy_root), base, env={"RERENDER_CACHE_DIR": str(workdir / "cache")},
                         cpu=not args.gpu)
    startup = time.perf_counter() - began
    try:
        info = server.client.object_info()
        prompt = comfy_run.load_prompt(PACK_ROOT / "workflows" / "rerender_video.json", object_info=info)
        for title, name, value in [("Load Video", "video", "Megamind.avi"), ("Load Video", "frame_load_cap", args.frames),
                                   ("Load Video", "skip_first_frames", args.skip),
                                   ("Load Video", "custom_width", args.size), ("Load Video", "custom_height", args.size),
                                   ("Load Checkpoint", "ckpt_name", CHECKPOINT),
                                   ("Load ControlNet", "control_net_name", CONTROLNET),
                                   ("Keyframe Selection", "keyframe_interval", args.interval),
                                   ("Keyframe Renderer", "steps", args.steps)]:
            comfy_run.set_input(prompt, title, name, value, info)
        meter = StageMeter(server.process.pid, prompt)
        stream = EventStream(server.url, server.client.client_id, meter.on_event)
        started = time.perf_counter()
        entry = server.wait(server.queue(prompt), 24 * 3600)
        total = time.perf_counter() - started
        meter.done.wait(10)
        meter.done.set()
        stream.close()
        if entry["status"]["status_str"] != "success":
            print(f"workflow failed: {error_message(entry)}")
            return 1
        reports = comfy_run.keyframe_reports(entry)
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    device = "GPU" if args.gpu else "CPU"
    print(f"\nRerender workflow: {args.frames} frames at {args.size}x{args.size}, K = {args.interval} "
          f"({len(keyframes)} keyframes), {args.steps} steps, ddim, cfg 7.5, ControlNet, random-weight SD1.5-layout "
          f"UNet + TAESD, ComfyUI on the {device}, empty cache")
    print(f"server start: {startup:.1f} s (not counted below)")
    print(f"{'stage':<12} {'wall s':>8} {'share':>6} {'peak RSS MiB':>13}  nodes")
    measured = sum(row[2] for row in meter.table())
    for stage, kinds, seconds, peak in meter.table():
        print(f"{stage:<12} {seconds:8.1f} {seconds / measured:6.1%} {peak / 2**20:13.0f}  {', '.join(kinds)}")
    print(f"{'total':<12} {total:8.1f} {'':>6} {max(meter.stage_peak.values()) / 2**20:13.0f}")
    print(f"seconds per output frame: {total / args.frames:.2f} (keyframes alone: "
          f"{meter.table()[[r[0] for r in meter.table()].index('keyframes')][2] / len(keyframes):.1f} s per keyframe)")
    if reports:
        print(f"keyframe seconds: {reports[0].get('seconds')}")
    print("Figures taken on a shared machine (other jobs run on the same cores): compare ratios, not absolute "
          "times, and re-run before drawing conclusions.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
