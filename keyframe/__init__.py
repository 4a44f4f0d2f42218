"""Keyframe translation maths of Rerender A Video (Yang et al. 2023, §4.1): hierarchical cross-frame constraints.

Pure torch; nothing here imports ComfyUI. ComfyUI objects (MODEL, VAE, CONDITIONING) reach this
package only through a *model adapter* (:class:`keyframe.render.ModelAdapter`), implemented for
ComfyUI in ``nodes/_keyframe_adapter.py``.

Modules:

* :mod:`.windows`     step windows of each constraint (which sampled steps it acts on);
* :mod:`.attention`   style-aware cross-frame attention (§4.1.1) and its feature store;
* :mod:`.fusion`      soft occlusion masks, shape-aware (§4.1.2) and pixel-aware (§4.1.3) latent fusion;
* :mod:`.adain`       colour-aware AdaIN of the x̂0 latent (§4.1.4);
* :mod:`.fidelity`    fidelity-oriented image encoding ``E*`` (Eqs. 8–9);
* :mod:`.sampler`     the DDIM(η=0) σ-space loop with per-step hooks and resume;
* :mod:`.constraints` one sampling pass's hooks (attention patch, post-CFG x̂0 edit, pixel fusion);
* :mod:`.region`      restyle only a region mask: the noise-mask rule in the loop, the render composite;
* :mod:`.reference`   the REFERENCE state carried from keyframe to keyframe;
* :mod:`.settings`    the settings of the keyframe stage (sampling, constraints, ``E*``), declared once;
* :mod:`.plan`        what a keyframe reads and runs (steps, flow pairs), and the FLOW check;
* :mod:`.render`      one keyframe: pass 1 → fused image → ``E*`` → pass 2 (resumed);
* :mod:`.layout`      which decoder layers take cross-frame attention, by latent resolution (SD1.5, SDXL);
* :mod:`.latent`      the model's latent scale and shift;
* :mod:`.loop`        every keyframe in order, with the REFERENCE hand-over and the disk cache.

The method as implemented, with the paper's sections and the deliberate differences from the
reference code: ``keyframe/ALGORITHM.md``.

Latent space: every latent here is in the *model's* space, the space ComfyUI's samplers work in
(``LATENT["samples"]`` after ``latent_format.process_in``, i.e. raw VAE latent × 0.18215 for SD1.5,
× 0.13025 for SDXL; :mod:`.latent`), where a noisy latent is ``x = x̂0 + σ·ε``. See :mod:`.render` for why.
"""
