"""What a Ray worker runs for one segment: load the pack, then :func:`segments.job.run_segment`.

This module imports nothing of the pack at import time: the Ray executor registers it with cloudpickle to
be pickled *by value*, so a worker can run :func:`run_job` before it knows the pack. The pack is imported
under whatever name the driver gave it (``rerender_video`` from the command line, ComfyUI's folder name
inside ComfyUI), from the same folder as on the driver or from ``$RERENDER_PACK_ROOT`` on the worker;
then the job, pickled by the driver, unpickles there. Every node needs the pack and its requirements
installed (README, "Scale out with Ray").
"""

from __future__ import annotations

import os
import pickle
import sys

#: Worker-side override of the pack's folder (when it is installed elsewhere than on the driver).
PACK_ROOT_ENV = "RERENDER_PACK_ROOT"


def _load_pack(package: str, driver_root: str) -> None:
    if package in sys.modules:
        return
    import importlib.util

    root = os.environ.get(PACK_ROOT_ENV) or driver_root
    spec = importlib.util.spec_from_file_location("_rerender_cli_for_ray", os.path.join(root, "rerender_cli.py"))
    if spec is None or not os.path.isdir(root):
        raise RuntimeError(f"the Rerender pack is not at {root} on this Ray node; install it there (same path "
                           f"as on the driver) or set {PACK_ROOT_ENV} to its folder")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    cli.load_pack(package)


def _exit_first_attempt(marker: str | None) -> None:
    """Test hook: the first task to claim ``marker`` (a file path) kills its worker process."""
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(1)


def run_job(package: str, driver_root: str, payload: bytes, source: bytes | None, threads: int,
            exit_marker: str | None = None):
    """Run one pickled ``(fn, job)`` on this worker; return this node's id and the frames, uint8 ``[n,H,W,3]``.

    Args:
        package: the pack's module name on the driver.
        driver_root: the pack's folder on the driver.
        payload: ``pickle.dumps((fn, job))``.
        source: the video file's bytes (the object-store route) or ``None`` (the job reads its path).
        threads: CPU threads for the synthesis and torch (the task's ``num_cpus``).
        exit_marker: test hook (:func:`_exit_first_attempt`).
    """
    _load_pack(package, driver_root)
    _exit_first_attempt(exit_marker)
    import dataclasses

    import numba
    import numpy as np
    import torch

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    torch.set_num_threads(max(1, threads))
    fn, job = pickle.loads(payload)
    if source is not None:
        job = dataclasses.replace(job, source=source)
    elif not os.path.isfile(job.index.path):
        errors = sys.modules[f"{package}.common.errors"]
        raise errors.input_error(
            "ray_source", "the source video at the same path on every Ray node", f"{job.index.path} missing on "
            f"node {os.uname().nodename}", ["set ray_source to object_store (the driver sends the file's bytes)",
                                            "put the video on storage every node mounts at that path"])
    import ray

    return ray.get_runtime_context().get_node_id(), np.stack(list(fn(job)))
