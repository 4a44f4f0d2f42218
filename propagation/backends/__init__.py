"""The synthesis backends: one home for the interface, the choice and the shared pieces.

* :mod:`.level` — what the level loop hands a backend: :class:`~.level.LevelSpec`, :class:`~.level.LevelState`,
  :class:`~.level.NnfStart`.
* :mod:`.passes` — the table of the passes of ``../ALGORITHM.md`` with their numba functions and CUDA kernels,
  and :func:`~.passes.pass_key`, the random key of a pass.
* :mod:`.backend` — :class:`~.backend.Backend`: every pass as one launch sequence on a runtime (and the one
  occupancy bookkeeping).
* :mod:`.numba_runtime` and ``cpu_kernels.py`` — the CPU runtime: the numba twin of every kernel.
* :mod:`.select` — :func:`~.select.get_backend` / :func:`~.select.choose_backend`: ``auto`` / ``cpu`` / ``cuda``
  (and ``host``), and why.

Imports run one way: ``propagation.synthesis`` → here → ``kernels`` (the CUDA C source and its runtimes) →
``common``; ``kernels`` imports nothing of ``propagation``.
"""
