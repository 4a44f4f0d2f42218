"""Node: Rerender Keyframe Renderer — every keyframe of a video with the cross-frame constraints (paper §4.1).

The node validates its inputs, binds :func:`keyframe.render.render_keyframe` to ComfyUI's model
(:class:`nodes._keyframe_adapter.ComfyModelAdapter`) and to each keyframe's ControlNet hint, and
hands it to :func:`keyframe.loop.render_keyframes`, which owns the order, progress and the cache.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch

from ..common import cache
from ..common.checks import check_image_batch
from ..common.errors import input_error
from ..common.keyframes import Keyframes, resolve_batch
from ..common.masks import FEATHER, MASK_GROW, check_mask, warn_if_empty
from ..keyframe.fusion import check_latent_size
from ..keyframe.loop import FORMAT_VERSION, render_keyframes
from ..keyframe.plan import KeyframePlan, check_flow
from ..keyframe.render import render_keyframe
from ..keyframe.settings import SEED, ConstraintSettings
from ._comfy import Progress, free_model_memory
from ._keyframe_widgets import constraint_widgets, sampling_widgets
from ._model_identity import (conditioning_identity, control_chain, describe, is_control, model_identity,
                              vae_identity)
from ._widgets import widget
from .keyframes import keyframe_choice_widgets

logger = logging.getLogger(__name__)

CATEGORY = "Rerender/keyframes"


class RerenderKeyframeRenderer:
    """Render all keyframes: the anchor, then each keyframe with the anchor and the previous keyframe."""

    DESCRIPTION = (
        "Renders the keyframes of a video with Rerender A Video's hierarchical cross-frame constraints (§4.1). "
        "The anchor (first keyframe) renders first and records the reference; every later keyframe renders "
        "with cross-frame attention to the anchor and the previous keyframe, shape-aware fusion with the "
        "flow-warped anchor, pixel-aware fusion of the warped anchor and previous renders (a second, partial "
        "pass) and AdaIN to the anchor's colours. Work in stages: first_keyframe_only renders just the anchor "
        "to tune prompt, denoise and ControlNet; then switch it off and the anchor is read back from disk. "
        "Every finished keyframe is cached on disk by its inputs, so a run that was cancelled or crashed "
        "resumes after the last finished keyframe with the same result. ControlNet: apply it to positive "
        "and negative with core Apply ControlNet; connect the per-frame hints (e.g. core Canny of the frames) "
        "to control_images and each keyframe gets its own. Region: connect a mask to restyle only it (grown "
        "by mask_grow, feathered by feather pixels); outside it each step keeps the frame's noised latent, as "
        "ComfyUI's noise mask does, and the keyframe is the source frame. SD1.5- or SDXL-family models.")
    CATEGORY = CATEGORY
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE", "STRING", "KEYFRAMES")
    RETURN_NAMES = ("keyframe_images", "indices", "keyframes")
    OUTPUT_TOOLTIPS = (
        "The rendered keyframes [M,H,W,3] in frame order (only the anchor with first_keyframe_only); connect "
        "to Rerender EbSynth Propagate's stylized_keyframes.",
        "Their frame indices as text, e.g. '0, 10, 20'.",
        "KEYFRAMES matching keyframe_images (only the anchor with first_keyframe_only); connect to Rerender "
        "EbSynth Propagate's keyframes.")

    @classmethod
    def INPUT_TYPES(cls):
        constraints_required, constraints_optional = constraint_widgets()
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "The video frames [N,H,W,3] (Rerender Load Video), or just the "
                                                "keyframes (Load Video with keyframes connected; connect the "
                                                "same KEYFRAMES here); width and height multiples of 8."}),
                "model": ("MODEL", {"tooltip": "An SD1.5- or SDXL-family model; LoRAs and other model patches go upstream "
                                               "(e.g. core Load LoRA)."}),
                "positive": ("CONDITIONING", {"tooltip": "Positive prompt, with the ControlNet applied (core Apply "
                                                         "ControlNet)."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative prompt, with the same ControlNet applied."}),
                "vae": ("VAE", {"tooltip": "VAE: encodes each keyframe (SDEdit start), decodes the renders, E* "
                                           "encodes the fused references."}),
                **keyframe_choice_widgets(),
                "first_keyframe_only": ("BOOLEAN", {"default": False, "tooltip":
                                                    "Render only the anchor (the first keyframe), to tune the look "
                                                    "quickly. Switch off to render all keyframes: the anchor is "
                                                    "read back from the cache when nothing else changed."}),
                "seed": widget(SEED, control_after_generate=False, tooltip=(
                    "Noise seed, the same noise for every keyframe (more consistent keyframes). Kept fixed between "
                    "runs on purpose: a new seed renders every keyframe again.")),
                **sampling_widgets(),
                "free_model_after": ("BOOLEAN", {"default": True, "tooltip":
                                                 "Unload the diffusion model (and ControlNet, VAE) from memory when "
                                                 "the keyframes are done, before propagation runs. Off keeps them "
                                                 "loaded for the next run."}),
                "use_cache": ("BOOLEAN", {"default": True, "tooltip":
                                          "Read and write finished keyframes on disk (in $RERENDER_CACHE_DIR or "
                                          "~/.cache/rerender_video). Off renders everything and writes nothing."}),
                **constraints_required,
            },
            "optional": {
                "flow": ("FLOW", {"tooltip": "Rerender Estimate Flow with pair_mode keyframes or "
                                             "consecutive+keyframes (the keyframe pairs (anchor, k) and (previous "
                                             "keyframe, k) are needed for shape- and pixel-aware fusion; "
                                             "consecutive+keyframes also serves propagation). Not needed with "
                                             "first_keyframe_only."}),
                "keyframes": ("KEYFRAMES", {"tooltip": "Keyframe selection (Rerender Keyframe Selection); overrides "
                                                       "keyframe_interval and keyframe_indices. Connect the same "
                                                       "KEYFRAMES to Rerender Estimate Flow."}),
                "control_images": ("IMAGE", {"tooltip": "Per-frame ControlNet hints aligned with frames [N,H,W,3] "
                                                        "(e.g. core Canny on the frames), or one per keyframe "
                                                        "[M,H,W,3]: each keyframe's hint replaces the hint of every "
                                                        "ControlNet applied to positive/negative. Unconnected: a "
                                                        "ControlNet whose hint batch has one image per frame gets "
                                                        "the keyframe's image, others are used as they are."}),
                **constraints_optional,
                "mask": ("MASK", {"tooltip": "Restyle only this region (1 = restyle): one mask per frame "
                                             "[N,H,W] (a segmentation node, or Rerender Propagate Mask for a mask "
                                             "painted on the first frame), one per keyframe when frames holds just "
                                             "the keyframes, or one mask [1,H,W] used for every keyframe. Outside "
                                             "it the keyframes are the source frames."}),
                "mask_grow": widget(MASK_GROW),
                "feather": widget(FEATHER),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def render(self, frames, model, positive, negative, vae, keyframe_interval, keyframe_indices, first_keyframe_only,
               seed, steps, cfg, sampler_name, scheduler, denoise, free_model_after, use_cache, flow=None,
               keyframes: Keyframes | None = None, control_images=None, unique_id=None, mask=None,
               mask_grow=MASK_GROW.default, feather=FEATHER.default, **constraints):
        plan = plan_render(frames, keyframe_interval, keyframe_indices, keyframes, first_keyframe_only, steps,
                           constraints, flow, control_images, mask)
        regions = KeyframeMasks(mask, plan, int(mask_grow), int(feather)) if mask is not None else None
        if regions is not None and regions.all_empty(plan.indices[:plan.count]):
            return self._unchanged(plan, regions, first_keyframe_only)
        from ._keyframe_adapter import ComfyModelAdapter

        adapter = ComfyModelAdapter(model, positive, negative, vae, seed, steps, cfg, sampler_name, scheduler, denoise)
        hints = KeyframeHints(positive, negative, control_images, plan.frame_count, plan.indices, plan.keyframes_only)
        def render_one(frame_index, reference, *, release_reference, progress):
            return render_keyframe(adapter, plan.frame(frame_index), frame_index, reference, flow,
                                   plan.settings, control=hints.conditioning(frame_index),
                                   release_reference=release_reference, progress=progress,
                                   **(regions.render_options(frame_index) if regions is not None else {}))

        base_key = None
        if use_cache:
            base_key = base_cache_key(model, vae, positive, negative, adapter.sigmas, plan.settings,
                                      seed=int(seed), cfg=float(cfg), sampler_name=sampler_name, scheduler=scheduler,
                                      steps=int(steps), denoise=float(denoise))
        keyframe_plan = plan.keyframe_plan(len(adapter.sigmas) - 1)
        units = keyframe_plan.steps_per_keyframe(plan.count)
        progress = Progress(sum(units), unique_id)
        result = render_keyframes(render_one, plan.indices, first_keyframe_only=bool(first_keyframe_only),
                                  base_key=base_key, inputs_of=plan.inputs_of(hints, flow, keyframe_plan, regions),
                                  steps_per_keyframe=units, progress=progress)
        if free_model_after:
            free_model_memory()
        rendered = Keyframes(result.indices, plan.frame_count, plan.selection.mode if not first_keyframe_only
                             else "explicit", plan.selection.shot_starts if not first_keyframe_only else ())
        summary = result.summary()
        logger.info("Rerender Keyframe Renderer: %s", summary)
        text = ", ".join(str(index) for index in result.indices)
        return {"ui": {"rerender_keyframes": [summary]}, "result": (result.images, text, rendered)}

    @staticmethod
    def _unchanged(plan: "RenderPlan", regions: "KeyframeMasks", first_keyframe_only: bool):
        """An empty mask on every keyframe: the keyframes are the source frames; no model runs."""
        indices = plan.indices[:plan.count]
        warn_if_empty(torch.cat([regions.pick(index) for index in indices]))
        images = torch.cat([plan.frame(index) for index in indices]).float()
        rendered = Keyframes(indices, plan.frame_count, plan.selection.mode if not first_keyframe_only
                             else "explicit", plan.selection.shot_starts if not first_keyframe_only else ())
        text = ", ".join(str(index) for index in indices)
        return {"ui": {"rerender_keyframes": [{"indices": list(indices), "empty_mask": True}]},
                "result": (images, text, rendered)}


# --------------------------------------------------------------------------- validation and plan
class RenderPlan:
    """The validated inputs of one run: frames, keyframes, settings; what each keyframe reads comes from
    its :class:`~keyframe.plan.KeyframePlan`."""

    def __init__(self, frames: torch.Tensor, selection: Keyframes, first_keyframe_only: bool,
                 settings: ConstraintSettings, steps: int, rows: Sequence[int] | None = None) -> None:
        self.frames = frames
        self.rows = {int(index): row for row, index in enumerate(rows if rows is not None else range(len(frames)))}
        self.frame_count = int(selection.frame_count)
        self.frame_size = (int(frames.shape[1]), int(frames.shape[2]))
        self.selection = selection
        self.indices = tuple(selection.indices)
        self.count = 1 if first_keyframe_only else len(self.indices)
        self.settings = settings
        self.steps = int(steps)

    @property
    def keyframes_only(self) -> bool:
        """True when ``frames`` holds just the keyframes (row ``i`` = keyframe ``i``)."""
        return len(self.rows) != self.frame_count

    def frame(self, index: int) -> torch.Tensor:
        """Video frame ``index`` as IMAGE ``[1,H,W,3]`` (``frames`` may hold the whole video or just the keyframes)."""
        row = self.rows[int(index)]
        return self.frames[row:row + 1]

    def keyframe_plan(self, total_steps: int | None = None) -> KeyframePlan:
        """The keyframes' plan at ``total_steps`` sampled steps (default: the steps widget)."""
        return KeyframePlan(self.settings, self.steps if total_steps is None else int(total_steps))

    def flow_pairs(self) -> list[tuple[int, int]]:
        """Every flow pair the keyframes of this run read (none for the anchor alone)."""
        return self.keyframe_plan().required_flow_pairs(self.indices[:self.count])

    def uses_flow(self) -> bool:
        """True when some keyframe of this run reads the flow (shape- or pixel-aware fusion acts)."""
        return bool(self.flow_pairs())

    def steps_per_keyframe(self, total: int) -> list[int]:
        """Model steps of each keyframe (the progress bar's units): the anchor one pass; a later keyframe
        pass 1 plus pass 2 from the pixel-fusion window on."""
        return self.keyframe_plan(total).steps_per_keyframe(len(self.indices))

    def inputs_of(self, hints: "KeyframeHints", flow: Any, keyframe_plan: KeyframePlan | None = None,
                  regions: "KeyframeMasks | None" = None):
        """``inputs_of(position)`` for the cache keys: the frame, its hints, exactly the flow pairs the
        render reads (:meth:`KeyframePlan.flow_pairs` of the keyframe, its anchor and previous keyframe),
        and with a mask the keyframe's mask, ``mask_grow`` and ``feather`` (no mask: the keys are unchanged)."""
        keyframe_plan = keyframe_plan or self.keyframe_plan()
        indices = self.indices

        def parts(position: int) -> list:
            index = indices[position]
            found: list = [self.frame(index), hints.identity(index)]
            if regions is not None:
                found += regions.identity(index)
            if position > 0:
                for source, key in keyframe_plan.flow_pairs(indices[0], indices[position - 1], index):
                    found += ["flow", source, *flow.between(source, key)]
            return found

        return parts


def plan_render(frames: Any, keyframe_interval: int, keyframe_indices: str, keyframes: Keyframes | None,
                first_keyframe_only: bool, steps: int, constraints: dict, flow: Any = None,
                control_images: Any = None, mask: Any = None) -> RenderPlan:
    """Validate everything that needs no model, in the order a user fixes it.

    Raises:
        InputError: frames that are not an IMAGE batch with sides multiple of 8; a bad keyframe
            selection (K ≥ the frame count, empty list, indices out of range or repeated, KEYFRAMES of
            another video); bad constraint settings; control_images of the wrong count or size; a
            missing FLOW or missing keyframe pairs when shape- or pixel-aware fusion is on; a mask of
            another size or count (:class:`KeyframeMasks`).
    """
    frames = check_image_batch(frames, "frames")
    check_latent_size(frames.shape[1], frames.shape[2], "frames")
    selection, rows = resolve_batch(int(frames.shape[0]), int(keyframe_interval), str(keyframe_indices or ""),
                                    keyframes)
    settings = ConstraintSettings.from_inputs(constraints)
    plan = RenderPlan(frames, selection, bool(first_keyframe_only), settings, steps, rows)
    if control_images is not None:
        _check_control_images(control_images, plan)
    if mask is not None:
        KeyframeMasks.check(mask, plan)
    check_flow(flow, plan.flow_pairs(), plan.frame_size, plan.frame_count)
    return plan


def _check_control_images(images: Any, plan: RenderPlan) -> None:
    images = check_image_batch(images, "control_images")
    allowed = sorted({1, plan.frame_count, len(plan.indices)})
    if images.shape[0] not in allowed:
        raise input_error("control_images", f"one hint per frame ({plan.frame_count}) or per keyframe "
                          f"({len(plan.indices)}), or one for all", f"{images.shape[0]} images",
                          "connect core Canny (or another preprocessor) to the same frames as this node")


# --------------------------------------------------------------------------- region masks per keyframe
class KeyframeMasks:
    """Each keyframe's region mask (issue 16): picked from a per-frame MASK batch, a per-keyframe batch (frames
    holding just the keyframes), or one mask for every keyframe.

    Args:
        mask: MASK ``[N|M|1,H,W]`` float32 in [0,1].
        plan: the run's :class:`RenderPlan`.
        mask_grow, feather: pixels (:data:`common.masks.MASK_GROW`, :data:`common.masks.FEATHER`).

    Raises:
        InputError: a mask of another size than the frames, a batch that is neither 1, one per video
            frame nor one per image of ``frames``, values outside [0, 1].
    """

    def __init__(self, mask: Any, plan: RenderPlan, mask_grow: int, feather: int) -> None:
        self.mask = self.check(mask, plan)
        self.plan, self.mask_grow, self.feather = plan, int(mask_grow), int(feather)

    @staticmethod
    def check(mask: Any, plan: RenderPlan) -> torch.Tensor:
        rows = int(plan.frames.shape[0])
        count = getattr(mask, "shape", (0,))[0] if getattr(mask, "ndim", 0) == 3 else 1
        per = plan.frame_count if count == plan.frame_count else rows  # per video frame, else per image of frames
        return check_mask(mask, per, *plan.frame_size, "mask")

    def pick(self, index: int) -> torch.Tensor:
        """Keyframe ``index``'s mask ``[1,H,W]``."""
        if self.mask.shape[0] == 1:
            return self.mask
        row = int(index) if self.mask.shape[0] == self.plan.frame_count else self.plan.rows[int(index)]
        return self.mask[row:row + 1]

    def all_empty(self, indices: Sequence[int]) -> bool:
        """True when no keyframe of ``indices`` has a pixel in its region."""
        return not any(bool((self.pick(index) > 0.5).any()) for index in indices)

    def render_options(self, index: int) -> dict:
        """Keyword arguments of :func:`keyframe.render.render_keyframe` for keyframe ``index``."""
        return {"mask": self.pick(index), "mask_grow": self.mask_grow, "feather": self.feather}

    def identity(self, index: int) -> list:
        """What keyframe ``index``'s render reads of the region, for its cache key."""
        return ["mask", self.pick(index), self.mask_grow, self.feather]


# --------------------------------------------------------------------------- ControlNet hints per keyframe
class KeyframeHints:
    """Each keyframe's conditioning: the ControlNet chain copied with the keyframe's hint.

    Args:
        positive, negative: CONDITIONING with ControlNets applied upstream (or none).
        control_images: IMAGE ``[N|M|1,H,W,3]`` hints, or ``None``.
        frame_count, indices: the video's frame count and the keyframe indices.

    With ``control_images``, every ControlNet of the chain gets the keyframe's image (picked by frame
    index for ``N`` images, by keyframe order for ``M``); without, a ControlNet whose own hint batch
    holds one image per frame (``N > 1``; or per keyframe, ``keyframes_only``: the frames are just the
    keyframes) gets the keyframe's, any other keeps its hint.

    Raises:
        InputError: ``control_images`` but no ControlNet in the conditioning.
    """

    def __init__(self, positive: Any, negative: Any, control_images: torch.Tensor | None, frame_count: int,
                 indices: Sequence[int], keyframes_only: bool = False) -> None:
        self.positive, self.negative = positive, negative
        self.keyframes_only = keyframes_only
        self.control_images = control_images
        self.frame_count = frame_count
        self.positions = {int(index): position for position, index in enumerate(indices)}
        self.keyframe_count = len(indices)
        nets = [net for conditioning in (positive, negative) for _, options in conditioning
                for net in control_chain(options.get("control") if isinstance(options, dict) else None)]
        if control_images is not None and not nets:
            raise input_error("control_images", "positive/negative with a ControlNet applied (core Apply "
                              "ControlNet) to give the hints to", "conditioning without a ControlNet",
                              ["apply a ControlNet upstream", "or disconnect control_images"])

    def _pick(self, batch: torch.Tensor, frame_index: int, per_keyframe: bool) -> torch.Tensor:
        if batch.shape[0] == self.frame_count and self.frame_count > 1:
            return batch[frame_index:frame_index + 1]
        if per_keyframe and batch.shape[0] == self.keyframe_count and batch.shape[0] > 1:
            position = self.positions[frame_index]
            return batch[position:position + 1]
        return batch

    def hint(self, net: Any, frame_index: int) -> torch.Tensor:
        """The hint ``[1|B,3,H,W]`` ControlNet ``net`` uses for keyframe ``frame_index``."""
        if self.control_images is not None:
            return self._pick(self.control_images, frame_index, True).movedim(-1, 1)
        original = net.cond_hint_original
        picked = self._pick(original, frame_index, self.keyframes_only) if isinstance(original, torch.Tensor) else None
        return original if picked is None else picked

    def conditioning(self, frame_index: int) -> tuple[list, list] | None:
        """``(positive, negative)`` for keyframe ``frame_index`` (``None``: use the adapter's own)."""
        copies: dict[int, Any] = {}

        def copy_chain(net: Any) -> Any:
            if net is None or not is_control(net):
                return net
            if id(net) not in copies:
                hint = self.hint(net, frame_index)
                copy = net.copy().set_cond_hint(hint, net.strength, net.timestep_percent_range, vae=net.vae,
                                                extra_concat=list(getattr(net, "extra_concat_orig", []) or []))
                copy.set_previous_controlnet(copy_chain(net.previous_controlnet))
                copies[id(net)] = copy
            return copies[id(net)]

        def convert(conditioning: list) -> list:
            out = []
            for embedding, options in conditioning:
                options = dict(options)
                if options.get("control") is not None:
                    options["control"] = copy_chain(options["control"])
                out.append([embedding, options])
            return out

        return convert(self.positive), convert(self.negative)

    def identity(self, frame_index: int) -> list:
        """The hints keyframe ``frame_index`` uses, for its cache key."""
        parts: list = []
        for conditioning in (self.positive, self.negative):
            for _, options in conditioning:
                for net in control_chain(options.get("control") if isinstance(options, dict) else None):
                    hint = self.hint(net, frame_index)  # hashed in full: edge maps are sparse
                    parts.append(hint if isinstance(hint, torch.Tensor) else describe(hint))
        return parts


# --------------------------------------------------------------------------- cache key
def base_cache_key(model: Any, vae: Any, positive: Any, negative: Any, sigmas: torch.Tensor,
                   settings: ConstraintSettings, **sampling: Any) -> str | None:
    """Hash of everything every keyframe depends on (see :mod:`nodes._model_identity`); ``None`` — no
    cache — when an input cannot be identified. ``settings`` stands for every constraint widget (its repr
    holds every field, windows included)."""
    try:
        return cache.content_key("rerender-keyframe-renderer", FORMAT_VERSION, model_identity(model),
                                 vae_identity(vae), conditioning_identity(positive), conditioning_identity(negative),
                                 torch.as_tensor(sigmas).float().cpu(), repr(settings), describe(sampling))
    except Exception as error:  # an exotic model patch: render without the cache rather than fail
        logger.warning("Rerender Keyframe Renderer: inputs cannot be identified for the cache (%s: %s); "
                       "rendering without it", type(error).__name__, error)
        return None


NODE_CLASS_MAPPINGS = {"RerenderKeyframeRenderer": RerenderKeyframeRenderer}
NODE_DISPLAY_NAME_MAPPINGS = {"RerenderKeyframeRenderer": "Rerender Keyframe Renderer"}
