"""Long videos in bounded memory: propagation and blend segment by segment, from the source file to the output.

Modules: :mod:`.plan` (the segments between keyframes, pure), :mod:`.job` (``SegmentJob`` and the pure
``run_segment``), :mod:`.store` (finished segments on disk, for resume), :mod:`.memory` (the memory guard),
:mod:`.executors` (where jobs run: ``local``, or ``ray`` in :mod:`.ray_executor` with :mod:`.ray_task` on the
workers; the settings that choose one), :mod:`.executor_interface` (what an executor provides, the types both
share), :mod:`.masks` (per-frame region masks read a segment at a time) and :mod:`.engine`
(``propagate_to_video``: checks, plan, run, write); :mod:`.keyframes` serves the keyframe stage of a long clip
(keyframes chosen while streaming the file, just the keyframes loaded). Nothing here imports ComfyUI; only ``nodes/``
and ``cli/`` import this package.
"""
