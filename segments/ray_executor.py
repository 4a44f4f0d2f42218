"""The Ray executor: each segment is one Ray task, a bounded number in flight, results handed on in order.

Everything distributed is Ray's (tasks with ``num_cpus`` / ``num_gpus``, :func:`ray.wait`, the object
store, ``max_retries``); this module only decides what to submit next and in which order to hand results
to the writer (the interface of :mod:`segments.executors`):

* at most ``max_in_flight`` segments are submitted ahead of the one the writer waits for; a segment that
  finishes out of order is handed to ``finished`` at once (the engine stores it on disk), so the driver
  holds one segment at a time and a driver that dies loses no finished segment;
* a task whose worker dies is retried by Ray (``max_retries``); a segment is a pure function, so the
  output is unchanged;
* the stylized keyframes travel with the pickled job through the object store; the source video is read at
  its path on every node (``ray_source`` "shared_path") or sent once through the object store
  ("object_store");
* each task runs :func:`segments.ray_task.run_job`, which loads the pack on the worker and returns the
  node's id and the segment's uint8 frames ``[n,H,W,3]``; with ``gpus_per_task`` > 0 the backend ``auto``
  picks CUDA there.

Ray is optional: without it, :class:`RayExecutor` raises an error that names ``pip install ray``.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..common.errors import NodeFix, input_error
from . import ray_task
from .executor_interface import RAY_SOURCES, Finished, SegmentFunction
from .job import SegmentJob

LOG = logging.getLogger(__name__)

#: Seconds to wait for a cluster's address to answer before refusing it.
CONNECT_TIMEOUT_S = 5.0
#: Seconds between interruption points (``progress()``) while waiting for tasks.
WAIT_S = 0.25
#: Retries of a task whose worker died (Ray's ``max_retries``).
MAX_RETRIES = 3
#: Test hook: a file path; the first task to create it kills its worker (the retry test).
EXIT_ONCE_ENV = "RERENDER_RAY_TEST_EXIT_ONCE"
#: The pack's folder on the driver (workers load it from there unless they set ``RERENDER_PACK_ROOT``).
PACK_ROOT = Path(__file__).resolve().parents[1]


def import_ray():
    """The ``ray`` module, or an InputError naming the install command."""
    try:
        import ray
    except ImportError as error:
        raise input_error("executor", "Ray installed, for executor 'ray'", f"no module ray ({error})",
                          ["pip install ray", NodeFix("install it into the Python that runs ComfyUI "
                                                      "(python -m pip install ray) and restart ComfyUI"),
                           "set executor to local"]) from None
    return ray


def _check_reachable(address: str) -> None:
    """Refuse ``HOST:PORT`` (or ``ray://HOST:PORT``) unless something answers there within the timeout."""
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise input_error("ray_address", "empty, 'auto', 'local' or HOST:PORT of a Ray head", repr(address),
                          "copy the address 'ray start --head' printed (e.g. 192.168.1.10:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise input_error("ray_address", "a running Ray cluster", f"{address} (no answer: {error})",
                          ["start the head there: ray start --head --port PORT", "check the host name and port",
                           "leave ray_address empty to start a local Ray"]) from None


class RayExecutor:
    """Runs segment jobs as Ray tasks (module docstring).

    Args:
        address: ``""`` (a Ray running on this machine, else a new local one), ``"auto"``, ``"local"`` or
            ``HOST:PORT``; ignored when Ray is already initialized in this process (that cluster is used).
        cpus_per_task: ``num_cpus`` of each task, and its synthesis threads.
        gpus_per_task: ``num_gpus`` of each task.
        source: ``"shared_path"`` or ``"object_store"`` (how workers get the video).
        max_retries: retries of a task whose worker died.

    Raises:
        InputError: Ray missing (names ``pip install ray``), an unreachable address, an unknown source, or
            resources per task that no node of the cluster has.
    """

    name = "ray"

    def __init__(self, address: str = "", cpus_per_task: int = 1, gpus_per_task: float = 0.0,
                 source: str = "shared_path", max_retries: int = MAX_RETRIES) -> None:
        if source not in RAY_SOURCES:
            raise input_error("ray_source", f"one of {RAY_SOURCES}", repr(source), "use 'shared_path'")
        self.ray = import_ray()
        self.cpus, self.gpus, self.source, self.max_retries = int(cpus_per_task), float(gpus_per_task), source, \
            max_retries
        self.started = self._connect(address.strip())
        self.slots = self._slots()
        self._outstanding: list = []
        #: Per position in the last ``map_ordered`` call, the id of the Ray node that computed the segment.
        self.task_nodes: dict[int, str] = {}

    def _connect(self, address: str) -> bool:
        ray = self.ray
        if ray.is_initialized():
            return False
        if address not in ("", "auto", "local"):
            _check_reachable(address)
        options = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        try:
            if address == "":
                try:
                    ray.init(address="auto", **options)
                except ConnectionError:
                    ray.init(**options)
            else:
                ray.init(address=address, **options)
        except (ConnectionError, TimeoutError, RuntimeError) as error:
            raise input_error("ray_address", "a Ray cluster this process can join", f"{address or 'auto'} ({error})",
                              ["check that the cluster runs the same Ray and Python versions",
                               "leave ray_address empty to start a local Ray"]) from None
        return True

    def _slots(self) -> int:
        """Tasks the cluster can run at once with these resources per task (refuses 0)."""
        slots = 0
        for node in self.ray.nodes():
            if not node.get("Alive"):
                continue
            resources = node.get("Resources", {})
            fits = int(resources.get("CPU", 0) // self.cpus) if self.cpus else 1 << 30
            if self.gpus:
                fits = min(fits, int(resources.get("GPU", 0) // self.gpus))
            slots += fits
        if slots == 0:
            raise input_error("cpus_per_task", "resources per task that a node of the Ray cluster has",
                              f"{self.cpus} CPU and {self.gpus:g} GPU per task; cluster: "
                              f"{self.ray.cluster_resources()}", ["lower cpus_per_task / gpus_per_task",
                                                                  "add nodes with more CPUs / GPUs"])
        return slots

    def suggested_in_flight(self) -> int:
        """Segments to keep in flight: one per task slot of the cluster plus one waiting."""
        return self.slots + 1

    def map_ordered(self, fn: SegmentFunction, jobs: Iterable[SegmentJob], max_in_flight: int = 1,
                    progress: Callable[[], None] | None = None,
                    finished: Finished | None = None) -> Iterator[Iterable[np.ndarray]]:
        """Results of ``fn(job)`` in job order as uint8 ``[n,H,W,3]`` arrays (or what ``finished`` returns)."""
        ray = self.ray
        ray.cloudpickle.register_pickle_by_value(ray_task)  # workers need not import the pack to start a task
        remote = ray.remote(ray_task.run_job).options(num_cpus=self.cpus, num_gpus=self.gpus,
                                                      max_retries=self.max_retries, retry_exceptions=False)
        package = __package__.rsplit(".", 1)[0]  # the pack's name in this process
        jobs, source = iter(jobs), None
        positions: dict = {}
        arrived: dict[int, Iterable[np.ndarray]] = {}
        submitted = handed = 0
        exhausted = False
        while True:
            while not exhausted and submitted - handed < max(1, max_in_flight):
                job = next(jobs, None)
                if job is None:
                    exhausted = True
                    break
                if self.source == "object_store" and source is None:
                    source = ray.put(Path(job.index.path).read_bytes())  # once; each task gets the bytes
                ref = remote.remote(package, str(PACK_ROOT), pickle.dumps((fn, job)), source,
                                    max(1, self.cpus), os.environ.get(EXIT_ONCE_ENV))
                positions[ref] = submitted
                self._outstanding.append(ref)
                submitted += 1
            if exhausted and handed == submitted:
                return
            while handed not in arrived:
                ready, _ = ray.wait(self._outstanding, num_returns=1, timeout=WAIT_S)
                if progress is not None:
                    progress()
                for ref in ready:
                    self._outstanding.remove(ref)
                    position = positions.pop(ref)
                    self.task_nodes[position], frames = ray.get(ref)
                    arrived[position] = finished(position, frames) if finished is not None else frames
                    del frames
            yield arrived.pop(handed)
            handed += 1

    def cancel(self) -> None:
        """Cancel the tasks still outstanding (their workers are stopped)."""
        for ref in self._outstanding:
            try:
                self.ray.cancel(ref, force=True)
            except Exception as error:  # a task that finished meanwhile; nothing to stop
                LOG.debug("cancel: %s", error)
        self._outstanding.clear()

    def close(self) -> None:
        """Cancel outstanding tasks and shut down the Ray this executor started (not a cluster it joined)."""
        self.cancel()
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
            self.started = False


def describe(executor: RayExecutor) -> str:
    """One line about the cluster for logs: nodes, CPUs, GPUs, task slots."""
    resources = executor.ray.cluster_resources()
    nodes = sum(1 for node in executor.ray.nodes() if node.get("Alive"))
    return (f"Ray: {nodes} node(s), {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs; "
            f"{executor.slots} task(s) at once ({executor.cpus} CPU, {executor.gpus:g} GPU each), Python "
            f"{sys.version.split()[0]}")
