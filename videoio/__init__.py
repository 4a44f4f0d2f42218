"""Video input/output with PyAV: load selected frames as an IMAGE batch, save H.264 MP4 with audio.

Modules: :mod:`.reader` (``probe``, ``iter_frames``, ``load_frames``), :mod:`.writer`
(``save_video``), :mod:`.info` (the VIDEO_INFO object), :mod:`.selection` (which frames the
``force_rate`` / ``skip_first_frames`` / ``select_every_nth`` / ``frame_load_cap`` widgets pick,
and in what order), :mod:`.sizing` (``custom_width`` / ``custom_height`` / ``size_multiple``),
:mod:`.rate` (exact Fraction frame rates), :mod:`.audio` (AUDIO decode, stream copy, AAC encode).

Conventions match ComfyUI core (LoadVideo / GetVideoComponents / CreateVideo / SaveVideo) and
VideoHelperSuite: IMAGE ``[N,H,W,3]`` float32 in [0,1], fps as a FLOAT socket, AUDIO
``{"waveform": [1,C,S] float32, "sample_rate": int}``. Nothing here imports ComfyUI.
"""
