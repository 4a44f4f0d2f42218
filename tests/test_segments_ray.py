"""The Ray executor: the same output file as the local executor, on one machine and on a two-node cluster,
through a worker's death, by both routes of the source video; clear errors before work.

Data: 60 frames of the bundled Megamind.avi at 128 px wide for the main equality (as tests/test_segments.py),
and a 24-frame, 128 px wide, video-only H.264 copy of frames 30–53 for the other runs (K = 6: four segments, the
last a streamed tail), with the short synthesis schedule of tests/test_segments.py. Ray runs with 1 CPU per
node or task, so the tests fit CI's two cores; nothing here is timed (benchmarks/scale_out.py measures).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from rerender_video.benchmarks._anchor_protocol import stylize_rgb
from rerender_video.common.errors import InputError
from rerender_video.common.keyframes import uniform
from rerender_video.propagation.params import SynthesisParams
from rerender_video.segments import engine
from rerender_video.segments.engine import prepare_video, propagate_to_video
from rerender_video.segments.executors import make_executor
from rerender_video.segments.job import SegmentSettings
from rerender_video.videoio.frame_index import index_video
from rerender_video.videoio.reader import load_frames
from rerender_video.videoio.writer import save_video

ray = pytest.importorskip("ray")
from rerender_video.segments.ray_executor import EXIT_ONCE_ENV, RayExecutor  # noqa: E402

SETTINGS = SegmentSettings(SynthesisParams(search_vote_iters=2, patchmatch_iters=2))


class Source:
    """A video file, its load widgets, stylized keyframes and the local executor's output file."""

    def __init__(self, path: Path, widgets: dict, interval: int, folder: Path) -> None:
        self.path, self.widgets = path, widgets
        frames = load_frames(path, **widgets).images
        self.keyframes = uniform(frames.shape[0], interval)
        self.styles = torch.from_numpy(np.stack([stylize_rgb(frame) for frame in
                                                 frames[list(self.keyframes.indices)].numpy()]))
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("RERENDER_CACHE_DIR", str(folder / "cache"))
            self.expected = self.run(folder / "local.mp4").read_bytes()
        written = load_frames(folder / "local.mp4").images
        assert written.std(dim=(1, 2, 3)).median() > 0.05  # detail in every frame, and frames that change
        assert (written[1:] - written[:-1]).abs().mean() > 0.004

    def index(self, path: Path | None = None):
        return index_video(path or self.path, **self.widgets)

    def run(self, output: Path, path: Path | None = None, **options) -> Path:
        return propagate_to_video(self.index(path), self.styles, self.keyframes, output, SETTINGS, **options)


@pytest.fixture(scope="module")
def clip(megamind_path, tmp_path_factory):
    """60 frames of Megamind (with its audio), K = 12: five segments."""
    return Source(megamind_path, dict(frame_load_cap=60, custom_width=128), 12, tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def small(megamind_path, tmp_path_factory):
    """24 frames (30–53: one shot, past the black fade-in) at 128 px, no audio (so the file alone is the source),
    K = 6: four segments."""
    folder = tmp_path_factory.mktemp("small")
    video = load_frames(megamind_path, frame_load_cap=24, skip_first_frames=30, custom_width=128)
    path = save_video(video.images, folder / "small.mp4", video.fps, crf=12)
    return Source(path, {}, 6, folder)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


# --- clear errors before any work -------------------------------------------------------------------------------

def test_missing_ray_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InputError, match="pip install ray"):
        make_executor("ray")


def test_an_unreachable_address_is_refused_quickly_naming_it():
    shutdown()
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(InputError, match=f"ray_address.*{address}"):
        make_executor("ray", ray_address=address)
    with pytest.raises(InputError, match="ray_address"):
        make_executor("ray", ray_address="no-port-here")
    assert not ray.is_initialized()


def test_the_propagate_command_names_its_ray_address_option(megamind_path, tmp_path, capsys):
    from rerender_video.cli import main

    shutdown()
    address = f"127.0.0.1:{free_port()}"
    code = main(["propagate", str(megamind_path), str(megamind_path.parent / "megamind_keys"), "--frames", "5",
                 "--executor", "ray", "--ray-address", address, "--output", str(tmp_path / "out.mp4")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: --ray-address: Expected a running Ray cluster, Got: {address}"), err
    assert not (tmp_path / "out.mp4").exists()


# --- one machine: a local Ray --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    """A local Ray started by the executor (``ray_address`` local), shut down after the module's local tests."""
    shutdown()
    executor = make_executor("ray", ray_address="local")
    yield executor
    executor.close()


def test_local_ray_writes_the_local_executors_file_and_the_local_executor_resumes_it(clip, local_ray, tmp_path,
                                                                                      monkeypatch):
    output = clip.run(tmp_path / "ray.mp4", executor=local_ray)
    assert output.read_bytes() == clip.expected
    assert len(local_ray.task_nodes) == 5
    # Every segment is in the store under the executor-independent key: the local executor computes nothing.
    monkeypatch.setattr(engine, "run_segment", lambda *args: pytest.fail("a stored segment was computed again"))
    assert clip.run(tmp_path / "again.mp4").read_bytes() == clip.expected


def test_a_worker_killed_in_its_first_attempt_is_retried_and_the_file_is_unchanged(small, local_ray, tmp_path,
                                                                                    monkeypatch):
    marker = tmp_path / "exited"
    monkeypatch.setenv(EXIT_ONCE_ENV, str(marker))
    assert small.run(tmp_path / "retried.mp4", executor=local_ray).read_bytes() == small.expected
    assert marker.exists()  # one worker did die (os._exit in its first attempt)


def test_the_object_store_route_needs_no_shared_path(small, local_ray, tmp_path, monkeypatch):
    moving = tmp_path / "moving.mp4"
    moving.write_bytes(small.path.read_bytes())
    put = ray.put

    def put_then_hide(value, *args, **kwargs):
        ref = put(value, *args, **kwargs)
        if moving.exists():
            moving.rename(tmp_path / "hidden.mp4")  # the workers cannot see the path any more
        return ref

    monkeypatch.setattr(ray, "put", put_then_hide)
    executor = RayExecutor(source="object_store")
    assert small.run(tmp_path / "sent.mp4", moving, executor=executor).read_bytes() == small.expected
    assert not moving.exists()


def test_the_shared_path_route_names_ray_source_when_workers_cannot_see_the_video(small, local_ray, tmp_path):
    moving = tmp_path / "moving.mp4"
    moving.write_bytes(small.path.read_bytes())
    run = prepare_video(small.index(moving), small.styles, small.keyframes, tmp_path / "out.mp4", SETTINGS,
                        executor=local_ray)
    moving.rename(tmp_path / "hidden.mp4")
    with pytest.raises(InputError, match="ray_source.*object_store"):
        run.write()
    assert not (tmp_path / "out.mp4").exists()


def test_local_ray_down():
    """Ends the module's local Ray before the two-node cluster (module fixtures tear down late)."""
    shutdown()
    assert not ray.is_initialized()


# --- two nodes on this machine ------------------------------------------------------------------------------------

def _stop(temp_dir: str) -> None:
    """Kill the processes of the cluster whose Ray temp folder is ``temp_dir`` (and their children) only."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(temp_dir in part for part in process.info["cmdline"] or ()):
            found += [process, *process.children(recursive=True)]
    for process in found:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(found, timeout=10)


@pytest.fixture
def two_nodes(tmp_path, monkeypatch):
    """A head and a second node started with ``ray start`` on the loopback address, one CPU each."""
    shutdown()
    ray_cli = str(Path(sys.executable).with_name("ray"))
    temp_dir = tempfile.mkdtemp(prefix="rr")  # short: Ray's socket paths must stay under 107 characters
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RERENDER_CACHE_DIR": str(tmp_path / "worker-cache")}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    common = ["--num-cpus", "1", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
    try:
        subprocess.run([ray_cli, "start", "--head", "--port", str(port), "--include-dashboard", "false",
                        "--temp-dir", temp_dir, *common], env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([ray_cli, "start", "--address", f"127.0.0.1:{port}", *common], env=env, check=True,
                       capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        shutdown()
        _stop(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


#: The driver of the two-node run, in its own process: Ray does not support joining a second cluster from a
#: process that already ran one (tasks then fail with OwnerDiedError).
DRIVER = """
import sys
sys.path.insert(0, sys.argv[1])
from rerender_cli import load_pack
load_pack()
import numpy as np, torch
from rerender_video.common.keyframes import uniform
from rerender_video.propagation.params import SynthesisParams
from rerender_video.segments.engine import propagate_to_video
from rerender_video.segments.executors import make_executor
from rerender_video.segments.job import SegmentSettings
from rerender_video.videoio.frame_index import index_video
executor = make_executor("ray", ray_address=sys.argv[2])
styles = torch.from_numpy(np.load(sys.argv[4]))
settings = SegmentSettings(SynthesisParams(search_vote_iters=2, patchmatch_iters=2))
propagate_to_video(index_video(sys.argv[3]), styles, uniform(24, 6), sys.argv[5], settings, executor=executor)
print("slots", executor.slots, "nodes", len(set(executor.task_nodes.values())), "segments", len(executor.task_nodes))
"""


@pytest.mark.slow
def test_a_two_node_cluster_runs_segments_on_both_nodes_and_writes_the_same_file(small, two_nodes, tmp_path):
    styles, output = tmp_path / "styles.npy", tmp_path / "cluster.mp4"
    np.save(styles, small.styles.numpy())
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-c", DRIVER, str(Path(__file__).resolve().parents[1]), two_nodes,
                           str(small.path), str(styles), str(output)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "slots 2 nodes 2 segments 4" in done.stdout
    assert output.read_bytes() == small.expected
