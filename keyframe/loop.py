"""The keyframe loop: anchor first, then every keyframe with the anchor and the previous keyframe,
cached on disk so that a re-run resumes after the last finished keyframe (paper §4.1;
``keyframe/ALGORITHM.md`` §9).

:func:`render_keyframes` takes the render function as a parameter — the Keyframe Renderer node
passes :func:`keyframe.render.render_keyframe` bound to ComfyUI's model, tests pass the toy model
or a few lines of torch — and owns the order, the REFERENCE hand-over, progress and the cache.

Order: position 0 (the anchor) renders with ``reference=None`` and records the REFERENCE; position
``p > 0`` renders with the REFERENCE left by position ``p-1``, which holds the anchor's features,
x̂0 trajectory and render and the previous keyframe's render (and features, when their update was
due). The loop owns every REFERENCE it receives, so it passes ``release_reference=True``: the old
"previous" features are dropped while they are read (peak ≈ 2 feature stores, not 3).

Cache (``common.cache``; every write is atomic, an interrupted write leaves nothing):

* **keys** are chained: ``key_0 = H(base, anchor inputs)``, ``key_p = H(key_{p-1}, keyframe p's
  inputs)``. ``base`` hashes what every keyframe depends on (model, VAE, conditioning, sampler
  settings, σ schedule, constraint settings, seed), the per-keyframe inputs are the frame, its
  ControlNet hints and exactly the flow pairs its render reads
  (:meth:`keyframe.plan.KeyframePlan.flow_pairs`). A keyframe's key therefore changes exactly when
  something it depends on changes — a later keyframe never invalidates an earlier one, and
  "first keyframe only" followed by "all keyframes" finds the anchor it rendered.
* **namespace** ``keyframes/<key_p>``: ``keyframe.safetensors`` (render ``[1,H,W,3]``, model-space
  latent ``[1,4,h,w]``, info); the anchor's entry also holds ``anchor.safetensors``, the part of the
  REFERENCE every later keyframe reads (anchor features, x̂0 per step, render, σ schedule).
  Kept for good: a re-run with all entries present only reads these small files.
* **namespace** ``keyframe_state/<key_p>`` (``p > 0``): ``state.safetensors``, the rest of the
  REFERENCE after keyframe ``p`` (its render and the "previous" attention features). One feature
  store is large (≈ 550 MB at 512×512, 20 steps, fp16, cond+uncond), so only the state of the last
  finished keyframe of a chain is kept: the state of ``p-1`` is deleted once ``p``'s is written.

Resume: the loop finds the longest prefix of keyframes with cache entries; if it is the whole list
it returns them, else it continues from the last keyframe of the prefix whose state is on disk (the
anchor's always is), re-rendering any keyframe of the prefix after it (only after a crash between
two writes). Renders are deterministic for a given input, so a resumed run reproduces the output
of an uninterrupted one bit for bit.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch

from ..common import cache
from ..common.errors import input_error
from .attention import FeatureStore
from .reference import ReferenceState

logger = logging.getLogger(__name__)

#: Cache namespace of finished keyframes (render, latent, info; the anchor's REFERENCE part).
NAMESPACE = "keyframes"
#: Cache namespace of the REFERENCE state after a keyframe (only the newest of a chain is kept).
STATE_NAMESPACE = "keyframe_state"
#: Bump when the stored layout or the meaning of the keys changes.
FORMAT_VERSION = 1

KEYFRAME_FILE = "keyframe.safetensors"
ANCHOR_FILE = "anchor.safetensors"
STATE_FILE = "state.safetensors"


class RenderFunction(Protocol):
    """What the loop calls to render one keyframe (bind everything else beforehand).

    Args:
        frame_index: the keyframe's frame index in the video.
        reference: ``None`` for the anchor, else the REFERENCE left by the previous keyframe.
        release_reference: the loop will not use ``reference`` again (pass it on to
            :func:`keyframe.render.render_keyframe`).
        progress: ``progress(done)`` after each model step, or ``None``.

    Returns:
        An object with ``image`` ``[1,H,W,3]``, ``latent`` ``[1,4,h,w]``, ``reference`` and
        ``info`` (:class:`keyframe.render.KeyframeResult`).
    """

    def __call__(self, frame_index: int, reference: ReferenceState | None, *, release_reference: bool,
                 progress: Callable[[int], None] | None) -> Any: ...


@dataclass
class LoopResult:
    """What :func:`render_keyframes` returns.

    Attributes:
        images: renders ``[M,H,W,3]`` float32 in [0,1], in keyframe order.
        latents: final latents ``[M,4,h,w]`` (model space).
        indices: the keyframes' frame indices (``M`` of them; only the anchor with
            ``first_keyframe_only``).
        rendered: frame indices rendered by this call.
        cached: frame indices read from the cache.
        resumed_after: frame index of the keyframe whose REFERENCE state the call continued from
            (``None`` when it started at the anchor or read everything from the cache).
        keys: the cache key of each keyframe (empty without a cache).
        infos: per keyframe: ``frame``, ``source`` ("rendered"/"cache"), ``seconds`` and the
            render function's info.
    """

    images: torch.Tensor
    latents: torch.Tensor
    indices: tuple[int, ...]
    rendered: list[int] = field(default_factory=list)
    cached: list[int] = field(default_factory=list)
    resumed_after: int | None = None
    keys: list[str] = field(default_factory=list)
    infos: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-ready summary: indices, what was rendered / read from the cache, the resume point, and per
        rendered keyframe the sampled steps each constraint acted on (``constraint_steps``)."""
        return {"indices": list(self.indices), "rendered": list(self.rendered), "cached": list(self.cached),
                "resumed_after": self.resumed_after, "cache": bool(self.keys),
                "seconds": {str(info["frame"]): round(float(info.get("seconds", 0.0)), 3) for info in self.infos},
                "constraint_steps": {str(info["frame"]): info["constraint_steps"] for info in self.infos
                                     if "constraint_steps" in info}}


# --------------------------------------------------------------------------- cache keys
def keyframe_keys(base_key: str, indices: Sequence[int],
                  inputs_of: Callable[[int], Sequence[Any]] | None = None) -> list[str]:
    """Chained cache keys of the keyframes (see the module docstring).

    Args:
        base_key: hash of what every keyframe depends on.
        indices: keyframe frame indices, anchor first.
        inputs_of: ``inputs_of(position)`` → tensors and JSON-able values keyframe ``position``
            reads (frame, hints, flow pairs), as :func:`common.cache.content_key` hashes them.

    Example:
        >>> a = keyframe_keys("base", [0, 4, 8])
        >>> b = keyframe_keys("base", [0, 4, 9])
        >>> a[:2] == b[:2], a[2] == b[2]
        (True, False)
    """
    keys: list[str] = []
    chain = str(base_key)
    for position, index in enumerate(indices):
        parts = list(inputs_of(position)) if inputs_of is not None else []
        chain = cache.content_key("rerender-keyframe", FORMAT_VERSION, chain, position, int(index), int(indices[0]),
                                  parts)
        keys.append(chain)
    return keys


# --------------------------------------------------------------------------- the loop
def render_keyframes(render: RenderFunction, indices: Sequence[int], *, first_keyframe_only: bool = False,
                     base_key: str | None = None, inputs_of: Callable[[int], Sequence[Any]] | None = None,
                     steps_per_keyframe: Sequence[int] | None = None,
                     progress: Callable[..., None] | None = None) -> LoopResult:
    """Render the keyframes in order, anchor first, reading and writing the cache.

    Args:
        render: the render function (:class:`RenderFunction`).
        indices: keyframe frame indices, sorted, anchor first.
        first_keyframe_only: render (or read) only the anchor — the look-tuning stage.
        base_key: hash of the shared inputs; ``None`` = no cache (nothing read or written).
        inputs_of: per-keyframe inputs for the keys (:func:`keyframe_keys`).
        steps_per_keyframe: progress units of each position (model steps; default 1 each).
        progress: ``progress(done, preview=None)`` with ``done`` in units of ``steps_per_keyframe``
            (total = their sum): after every model step, and after every keyframe with its render
            ``[H,W,3]`` as preview. A progress callback that raises (ComfyUI's Cancel) stops the
            loop between or inside keyframes; finished keyframes stay cached.

    Returns:
        :class:`LoopResult`.

    Raises:
        InputError: no keyframes, or indices that are not sorted and unique.
        Whatever ``render`` or ``progress`` raise.

    Example:
        >>> from types import SimpleNamespace
        >>> def fake(index, reference, *, release_reference, progress):
        ...     return SimpleNamespace(image=torch.full((1, 8, 8, 3), index / 10), latent=torch.zeros(1, 4, 1, 1),
        ...                            reference=None, info={})
        >>> render_keyframes(fake, [0, 5]).images[:, 0, 0, 0].tolist()
        [0.0, 0.5]
    """
    indices = tuple(int(i) for i in indices)
    if not indices:
        raise input_error("keyframes", "at least one keyframe", "an empty list", "select one keyframe or more")
    if list(indices) != sorted(set(indices)):
        raise input_error("keyframes", "sorted keyframe indices without repeats", list(indices),
                          "sort the list and remove repeated indices")
    count = 1 if first_keyframe_only else len(indices)
    units = [max(int(u), 1) for u in (steps_per_keyframe or [1] * len(indices))][:count]
    units += [1] * (count - len(units))
    offsets = [sum(units[:p]) for p in range(count)]
    report = progress or (lambda done, preview=None: None)

    keys = keyframe_keys(base_key, indices[:count], inputs_of) if base_key is not None else []
    outputs: list[tuple[torch.Tensor, torch.Tensor, dict]] = []
    result = LoopResult(torch.empty(0), torch.empty(0), indices[:count], keys=keys)

    done = 0
    while keys and done < count and cache.lookup(NAMESPACE, keys[done]) is not None:
        done += 1
    start, reference = 0, None
    if done == count:
        start = count
    elif done:
        start, reference = _resume_point(keys, done)
        if start < done:
            logger.info("Rerender keyframes: no saved state after keyframe %d; re-rendering from keyframe %d",
                        indices[done - 1], indices[start])
    for position in range(start):
        image, latent, info = _read_keyframe(cache.lookup(NAMESPACE, keys[position]))
        outputs.append((image, latent, {**info, "frame": indices[position], "source": "cache", "seconds": 0.0}))
        result.cached.append(indices[position])
    if start:
        if start < count:
            result.resumed_after = indices[start - 1]
            logger.info("Rerender keyframes: %d of %d read from the cache, continuing after keyframe %d",
                        start, count, indices[start - 1])
        else:
            logger.info("Rerender keyframes: all %d read from the cache", count)
        report(offsets[start - 1] + units[start - 1], outputs[-1][0][0])

    for position in range(start, count):
        index = indices[position]
        began = time.perf_counter()

        def step_progress(done_steps: int, _offset=offsets[position], _units=units[position]) -> None:
            report(_offset + min(int(done_steps), _units))

        rendered = render(index, reference, release_reference=reference is not None, progress=step_progress)
        image = rendered.image.detach().float().cpu()
        latent = rendered.latent.detach().float().cpu()
        reference = rendered.reference
        info = {**dict(getattr(rendered, "info", None) or {}), "frame": index, "source": "rendered",
                "seconds": time.perf_counter() - began}
        if keys:
            _store(keys, position, image, latent, info, reference)
        outputs.append((image, latent, info))
        result.rendered.append(index)
        logger.info("Rerender keyframes: keyframe %d (%d of %d) rendered in %.1f s", index, position + 1, count,
                    info["seconds"])
        report(offsets[position] + units[position], image[0])

    result.images = torch.cat([o[0] for o in outputs])
    result.latents = torch.cat([o[1] for o in outputs])
    result.infos = [o[2] for o in outputs]
    return result


def _store(keys: list[str], position: int, image: torch.Tensor, latent: torch.Tensor, info: dict,
           reference: ReferenceState) -> None:
    """Write keyframe ``position`` (and the state to continue after it); a full disk only costs the cache."""
    try:
        _write_keyframe(keys[position], image, latent, info, reference if position == 0 else None)
        if position > 0:  # the anchor's entry already holds what continuing after it needs
            _write_state(keys[position], reference)
        if position > 1:
            _drop_state(keys[position - 1])
    except OSError as error:
        logger.warning("Rerender keyframes: could not write the cache (%s); continuing without it", error)


def _resume_point(keys: list[str], done: int) -> tuple[int, ReferenceState]:
    """``(first position to render, the REFERENCE to render it with)`` after a cached prefix of ``done``
    keyframes: the newest saved state in the prefix, else the anchor's."""
    anchor_entry = cache.lookup(NAMESPACE, keys[0])
    for position in range(done - 1, 0, -1):
        state = cache.lookup(STATE_NAMESPACE, keys[position])
        if state is not None and (state / STATE_FILE).is_file():
            return position + 1, _read_state(state, _read_anchor(anchor_entry))
    return 1, _read_anchor(anchor_entry)


# --------------------------------------------------------------------------- storage
def _save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    from safetensors.torch import save_file

    save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, str(path),
              metadata={"rerender": json.dumps(metadata, default=str)})


def _load(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), framework="pt") as handle:
        metadata = json.loads((handle.metadata() or {}).get("rerender", "{}"))
        for name in handle.keys():
            tensors[name] = handle.get_tensor(name)
    return tensors, metadata


def _store_tensors(store: FeatureStore, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{step}.{branch}.{block}": store.get(step, branch, block)
            for step, branch, block in store.keys()}


def _store_from(tensors: dict[str, torch.Tensor], prefix: str, dtype: str, offload: str) -> FeatureStore:
    """The store saved under ``prefix``; its tensors leave ``tensors`` as they are copied in (one copy at a time)."""
    store = FeatureStore(getattr(torch, dtype.replace("torch.", "")), offload)
    for name in sorted(name for name in tensors if name.startswith(prefix + ".")):
        step, branch, block = (int(v) for v in name[len(prefix) + 1:].split("."))
        store.put(step, branch, block, tensors.pop(name))
    return store.freeze()


def _write_keyframe(key: str, image: torch.Tensor, latent: torch.Tensor, info: dict,
                    anchor: ReferenceState | None) -> None:
    with cache.new_entry(NAMESPACE, key) as folder:
        _save(folder / KEYFRAME_FILE, {"image": image, "latent": latent}, {"info": info})
        if anchor is not None:
            tensors = {"anchor_render": anchor.anchor_render, "sigmas": anchor.sigmas,
                       **{f"x0.{step}": x0 for step, x0 in anchor.anchor_x0.items()},
                       **_store_tensors(anchor.anchor_features, "features")}
            _save(folder / ANCHOR_FILE, tensors, {
                "anchor_index": anchor.anchor_index, "frame_size": list(anchor.frame_size),
                "blocks": list(anchor.blocks), "branches": list(anchor.branches),
                "feature_dtype": str(anchor.anchor_features.dtype), "offload": anchor.anchor_features.offload})


def _read_keyframe(folder: Path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    tensors, metadata = _load(folder / KEYFRAME_FILE)
    return tensors["image"], tensors["latent"], dict(metadata.get("info", {}))


def _read_anchor(folder: Path) -> ReferenceState:
    tensors, meta = _load(folder / ANCHOR_FILE)
    features = _store_from(tensors, "features", meta["feature_dtype"], meta["offload"])
    x0 = {int(name[3:]): t for name, t in tensors.items() if name.startswith("x0.")}
    render = tensors["anchor_render"]
    index = int(meta["anchor_index"])
    return ReferenceState(anchor_index=index, previous_index=index, previous_features_index=index,
                          keyframes_rendered=0, frame_size=tuple(meta["frame_size"]), sigmas=tensors["sigmas"],
                          blocks=tuple(meta["blocks"]), branches=tuple(meta["branches"]), anchor_features=features,
                          previous_features=features, anchor_x0=dict(sorted(x0.items())), anchor_render=render,
                          previous_render=render)


def _write_state(key: str, reference: ReferenceState) -> None:
    shared = reference.previous_features is reference.anchor_features
    tensors = {"previous_render": reference.previous_render}
    if not shared:
        tensors.update(_store_tensors(reference.previous_features, "features"))
    with cache.new_entry(STATE_NAMESPACE, key) as folder:
        _save(folder / STATE_FILE, tensors, {
            "previous_index": reference.previous_index, "previous_features_index": reference.previous_features_index,
            "keyframes_rendered": reference.keyframes_rendered, "previous_is_anchor": shared,
            "feature_dtype": str(reference.previous_features.dtype), "offload": reference.previous_features.offload})


def _read_state(folder: Path, anchor: ReferenceState) -> ReferenceState:
    tensors, meta = _load(folder / STATE_FILE)
    previous = anchor.anchor_features if meta["previous_is_anchor"] else \
        _store_from(tensors, "features", meta["feature_dtype"], meta["offload"])
    return replace(anchor, previous_index=int(meta["previous_index"]),
                   previous_features_index=int(meta["previous_features_index"]),
                   keyframes_rendered=int(meta["keyframes_rendered"]), previous_features=previous,
                   previous_render=tensors["previous_render"], _stats={})


def _drop_state(key: str) -> None:
    folder = cache.lookup(STATE_NAMESPACE, key)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
