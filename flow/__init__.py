"""Optical flow for the pack: estimation (OpenCV DIS, torchvision RAFT), occlusion masks, warping, pictures.

* :mod:`flow.types` — :class:`FlowPairs`, the FLOW object passed between nodes.
* :mod:`flow.warp` — the one backward warp every stage uses.
* :mod:`flow.estimate` — :func:`estimate_flow`: flows + occlusion masks for frame pairs, cached on disk.
* :mod:`flow.pairs` — which pairs each pair mode computes.
* :mod:`flow.dis`, :mod:`flow.raft` — the backends; :mod:`flow.occlusion` — the forward–backward check;
  :mod:`flow.visualize` — the flow colour wheel and occlusion overlays.
* :mod:`flow.mask_carry` — a first-frame region mask carried through a clip by the flow (streaming).

Nothing here imports ComfyUI; torchvision is imported only when a RAFT flow is computed.
"""
