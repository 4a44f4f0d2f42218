"""Guided patch-based video propagation (Jamriška et al. 2019, "Stylizing Video by Example"; Rerender §4.2).

Modules (import them directly; this package imports nothing heavy on purpose):

* :mod:`.params` — :class:`~.params.SynthesisParams`, the knobs of one synthesis (patch size, schedule,
  uniformity, stop threshold, seed).
* :mod:`.synthesis` — :func:`~.synthesis.synthesize`: guided multiscale PatchMatch search + vote of one
  target image from a stylized keyframe (the EbSynth step), with :class:`~.synthesis.Guide` and
  :class:`~.synthesis.SynthesisResult`.
* :mod:`.pyramid` — the anti-aliased image pyramid and level sizes.
* :mod:`.backends` — the synthesis backends: the per-level passes on a numba (CPU) or CUDA runtime, the pass
  table, and :func:`~.backends.select.get_backend` (deterministic, thread-count independent, bit-identical).
* ``ALGORITHM.md`` — the exact algorithm (every pass, RNG, tie-break, border and rounding rule) that every
  backend follows bit for bit.

The video-level part (guides of a chain, sequences, blending) builds on :func:`~.synthesis.synthesize`.
"""
