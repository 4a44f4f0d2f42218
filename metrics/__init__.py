"""Temporal quality of a stylized video: one yardstick for users and for the project's benchmarks.

* :mod:`metrics.consistency` — per frame pair: **warp error** (Lai et al., ECCV 2018) and **flicker**
  (VBench temporal flickering).
* :mod:`metrics.reference` — per frame against a reference video: **PSNR** and **SSIM**.
* :mod:`metrics.clip` — optional, with CLIP encoders the caller supplies: **Tem-Con** and **Fram-Acc**
  (Rerender-A-Video §5.2).
* :mod:`metrics.evaluate` — :func:`~metrics.evaluate.evaluate_video`: all of the above in one streaming
  pass over the frames (videos read from disk frame by frame, or in-memory IMAGE batches), returning a
  :class:`~metrics.report.TemporalReport` (means, per-frame lists, JSON, a text table).
* :mod:`metrics.plot` — the per-frame chart (warp error and flicker over time, keyframes marked).
* :mod:`metrics.keyframe_cost` — how much content a keyframe cannot reach: the cost the ``adaptive``
  keyframe selection minimises.

Nothing here imports ComfyUI; the CLIP models are passed in as plain callables.
"""
