"""Parameters of one guided synthesis (EbSynth's knobs, Rerender's defaults).

Source: propagation/ALGORITHM.md §16 (EbSynth's defaults, Rerender's 12 × 6 schedule; paper §4.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..common.errors import input_error
from ..common.settings import setting

VOTE_MODES = ("plain", "weighted")


@dataclass(frozen=True)
class SynthesisParams:
    """Knobs of :func:`propagation.synthesis.synthesize`.

    The fields a user sets carry their :class:`~common.settings.Setting` (range, tooltip); the Propagate
    node's widgets and the ``propagate`` command's options are generated from them.

    Attributes:
        patch_size: patch side in pixels; odd, >= 3 (EbSynth and Rerender: 5).
        pyramid_levels: number of pyramid levels; 0 = automatic (the most levels whose coarsest smaller side
            is still >= 2·patch_size+1, EbSynth's rule), a larger request is clamped to that maximum.
        search_vote_iters: search–vote (EM) iterations per level (Rerender: 12).
        patchmatch_iters: PatchMatch iterations per search–vote iteration (Rerender: 6).
        uniformity: weight λ of the occupancy (uniformity) penalty in EbSynth units (3500; 0 disables it).
        extra_pass_3x3: after the finest level, run it once more with 3×3 patches and λ = 0 (EbSynth's flag).
        stop_threshold: 0–255 units; after a vote, pixels whose style estimate moved less than this in every
            channel (and whose whole patch neighbourhood did too) are frozen for the next search (EbSynth
            CUDA behaviour), at the ``freeze_levels`` finest levels. With 0 a pixel freezes only once no NNF
            within twice the patch radius moved during a whole search–vote iteration (ALGORITHM.md §7–8).
        freeze_levels: number of finest pyramid levels where ``stop_threshold`` freezing applies; coarser levels
            search every pixel in every iteration (they hold under 1/16 of the work but fix the global
            correspondence: freezing them too cost 0.14 dB on the Megamind protocol).
        seed: seed of the counter-based random generator (results are a pure function of inputs and seed).
        vote_mode: ``"plain"`` (EbSynth's average of the overlapping patches) or ``"weighted"``
            (each patch weighted by 1 / (1 + its error per pixel and style channel), EbSynth's weighted vote).
        initial_nnf_levels: when an ``initial_nnf`` is given to ``synthesize``, how many of the finest levels
            are run (the coarser ones are skipped and the first run level starts from the initial NNF).

    Raises:
        InputError: from :meth:`validate` (called by ``synthesize``) for out-of-range values.

    Example:
        >>> SynthesisParams(patch_size=7).validate().patch_size
        7
    """

    patch_size: int = setting(5, "Patch side in pixels (odd). EbSynth/Rerender: 5.", min=3, max=15, step=2)
    pyramid_levels: int = setting(0, "Coarse-to-fine levels; 0 = automatic (as many as the frame size allows, "
                                     "EbSynth's rule).", min=0, max=16)
    search_vote_iters: int = setting(12, "Search–vote iterations per pyramid level (Rerender 12, EbSynth 6). Time "
                                         "grows linearly.", min=1, max=64)
    patchmatch_iters: int = setting(6, "PatchMatch iterations per search–vote iteration (Rerender 6, EbSynth 4).",
                                    min=0, max=64)
    uniformity: float = setting(3500.0, "Weight of the uniformity term that spreads the use of keyframe patches "
                                        "(EbSynth 3500; 0 off).", min=0.0, max=100000.0, step=50.0)
    extra_pass_3x3: bool = setting(False, "Refine once more with 3×3 patches at the finest level (sharper, slower; "
                                          "off in Rerender).")
    stop_threshold: float = 5.0
    seed: int = setting(0, "Seed of PatchMatch's random search; results are deterministic for a given seed.",
                        name="patchmatch_seed", min=0, max=2**31 - 1, flag="--seed")
    vote_mode: str = "plain"
    initial_nnf_levels: int = 1
    freeze_levels: int = 2

    def validate(self) -> "SynthesisParams":
        """Check every field; return ``self`` so calls chain. Raises InputError naming the field."""
        if not isinstance(self.patch_size, int) or self.patch_size < 3 or self.patch_size % 2 == 0:
            raise input_error("patch_size", "an odd integer >= 3", self.patch_size,
                              "use 5 (EbSynth's default) or another odd size such as 3 or 7")
        _check_int("pyramid_levels", self.pyramid_levels, 0, "use 0 for the automatic (maximum) pyramid")
        _check_int("search_vote_iters", self.search_vote_iters, 1, "use 12 (Rerender) or 6 (EbSynth CLI)")
        _check_int("patchmatch_iters", self.patchmatch_iters, 0, "use 6 (Rerender) or 4 (EbSynth CLI)")
        _check_int("initial_nnf_levels", self.initial_nnf_levels, 1, "use 1 (finest level only) or 2")
        _check_int("freeze_levels", self.freeze_levels, 0, "use 2 (freeze only at the two finest levels)")
        _check_int("patchmatch_seed", self.seed, 0, "use a non-negative integer")
        if not 0.0 <= float(self.uniformity) < float("inf"):
            raise input_error("uniformity", "a finite number >= 0", self.uniformity, "use 3500 (EbSynth's default)")
        if not 0.0 <= float(self.stop_threshold) <= 255.0:
            raise input_error("stop_threshold", "a number in [0, 255]", self.stop_threshold,
                              "use 5 (EbSynth's default) or 0 to disable freezing")
        if self.vote_mode not in VOTE_MODES:
            raise input_error("vote_mode", f"one of {VOTE_MODES}", repr(self.vote_mode), "use 'plain'")
        return self


def _check_int(name: str, value: object, minimum: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise input_error(name, f"an integer >= {minimum}", value, fix)
