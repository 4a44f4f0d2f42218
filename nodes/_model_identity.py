"""Cheap, deterministic identities of ComfyUI objects for cache keys (MODEL, VAE, CONDITIONING, ControlNet).

Duck-typed — nothing here imports ComfyUI. An identity is a list of JSON-able values and tensors
that :func:`common.cache.content_key` hashes; it never holds a memory address or a random id, so
the same checkpoint loaded in another process gives the same identity.

* a MODEL (``ModelPatcher``): model class, config and prediction type; every state-dict key with
  its dtype and shape and an evenly spaced sample of its values (256 per tensor — reading a few
  hundred values per tensor costs milliseconds even for SD1.5, while two different checkpoints or
  fine-tunes differ in them with certainty); the weight patches (LoRA and other ``add_patches``
  users: keys, strengths and a sample of the patch tensors); object patches; and
  ``model_options`` (patch functions by qualified name and the numbers they close over). Keys with
  weight patches are sampled without their values, since ComfyUI patches them in place while the
  model is loaded and their value depends on whether it is;
* a VAE: its ``first_stage_model`` as above;
* CONDITIONING: every embedding in full, every other entry described; the ControlNet chain by
  type, settings and the control model's identity — *not* its hint images, which the keyframe
  renderer hashes per keyframe.

Limits (documented for users): a patch function is identified by its name and the numbers,
strings and tensors it closes over or holds as attributes; state deeper than that is not seen.
"""

from __future__ import annotations

import enum
import functools
import types
from typing import Any

import torch

#: Values sampled from each weight tensor.
SAMPLES_PER_TENSOR = 256
#: Tensors up to this many elements (embeddings, masks, LoRA matrices; 16 MB of fp32) are hashed in full;
#: larger ones by dtype, shape and a sample.
FULL_TENSOR_LIMIT = 1 << 22
#: How deep :func:`describe` follows nested objects.
MAX_DEPTH = 6
#: ControlNet attributes that are runtime state, hints (hashed per keyframe) or described separately.
CONTROL_SKIP = frozenset({"cond_hint_original", "cond_hint", "previous_controlnet", "control_model_wrapped",
                          "model_sampling_current", "timestep_range", "extra_concat", "load_device",
                          "preprocess_image", "vae"})


def tensor_sample(tensor: torch.Tensor, count: int = SAMPLES_PER_TENSOR) -> torch.Tensor:
    """``count`` evenly spaced values of a tensor (all of them if it is smaller), float32 on the CPU.

    Example:
        >>> tensor_sample(torch.arange(10.0), 4).tolist()
        [0.0, 3.0, 6.0, 9.0]
    """
    flat = tensor.detach().reshape(-1)
    if flat.numel() > count:
        positions = torch.linspace(0, flat.numel() - 1, count).round().long().to(flat.device)
        flat = flat[positions]
    return flat.float().cpu()


def _tensor(tensor: torch.Tensor) -> list:
    head = ["tensor", str(tensor.dtype), list(tensor.shape)]
    if tensor.numel() <= FULL_TENSOR_LIMIT:
        return head + [tensor.detach().float().cpu()]
    return head + [tensor_sample(tensor)]


def module_identity(module: Any, unsampled: frozenset[str] = frozenset()) -> list:
    """Class name, then per state-dict entry: key, dtype, shape and a value sample (unless in ``unsampled``)."""
    parts: list = [type(module).__qualname__]
    for name, tensor in module.state_dict().items():
        parts += [name, str(tensor.dtype), list(tensor.shape)]
        if name not in unsampled:
            parts.append(tensor_sample(tensor))
    return parts


def model_identity(model: Any) -> list:
    """Identity of a MODEL (``ModelPatcher``) — see the module docstring."""
    base = getattr(model, "model", model)
    config = getattr(base, "model_config", None)
    patches = dict(getattr(model, "patches", None) or {})
    patched = frozenset(key if isinstance(key, str) else str(key[0]) for key in patches)
    parts: list = ["model", type(base).__qualname__, type(config).__qualname__ if config is not None else None,
                   getattr(getattr(base, "model_type", None), "name", None),
                   str(getattr(base, "manual_cast_dtype", None))]
    parts += module_identity(base, patched)
    parts += ["patches", describe(sorted(patches.items(), key=lambda item: str(item[0])))]
    parts += ["object_patches", describe(dict(getattr(model, "object_patches", None) or {}))]
    parts += ["model_options", describe(dict(getattr(model, "model_options", None) or {}))]
    return parts


def vae_identity(vae: Any) -> list:
    """Identity of a VAE (its ``first_stage_model``)."""
    module = getattr(vae, "first_stage_model", None)
    if module is None:
        return ["vae", describe(vae)]
    return ["vae", type(vae).__qualname__, *module_identity(module)]


def conditioning_identity(conditioning: Any) -> list:
    """Identity of a CONDITIONING without its ControlNet hint images."""
    return ["conditioning", describe(conditioning)]


def control_chain(control: Any) -> list:
    """The ControlNets of a chain, newest first (``previous_controlnet`` links)."""
    chain, seen = [], set()
    while control is not None and id(control) not in seen:
        seen.add(id(control))
        chain.append(control)
        control = getattr(control, "previous_controlnet", None)
    return chain


def is_control(value: Any) -> bool:
    """True for a ComfyUI ControlNet / T2I adapter object (``ControlBase``)."""
    return hasattr(value, "cond_hint_original") and hasattr(value, "previous_controlnet")


def _control(value: Any, depth: int, seen: set) -> list:
    parts: list = ["control"]
    for net in control_chain(value):
        fields = {name: item for name, item in vars(net).items() if name not in CONTROL_SKIP}
        parts += [type(net).__qualname__, describe(fields, depth + 1, seen)]
        vae = getattr(net, "vae", None)
        parts.append(vae_identity(vae) if vae is not None else None)
    return parts


def _callable(value: Any, depth: int, seen: set) -> list:
    if isinstance(value, functools.partial):
        return ["partial", _callable(value.func, depth + 1, seen), describe(list(value.args), depth + 1, seen),
                describe(dict(value.keywords), depth + 1, seen)]
    target = getattr(value, "__func__", value)  # bound method → function
    name = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', type(target).__qualname__)}"
    parts: list = ["callable", name]
    cells = getattr(target, "__closure__", None) or ()
    parts.append(describe([_cell(cell) for cell in cells], depth + 1, seen))
    parts.append(describe(list(getattr(target, "__defaults__", None) or ()), depth + 1, seen))
    owner = getattr(value, "__self__", None)
    if owner is not None and not isinstance(owner, types.ModuleType):
        parts.append(describe(owner, depth + 1, seen))
    return parts


def _cell(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # empty cell
        return None


def describe(value: Any, depth: int = 0, seen: set | None = None) -> Any:
    """A deterministic, hashable description of ``value``: JSON-able values, tensors, nested lists.

    Dicts become ``["dict", key, value, …]`` lists (sorted by the key's text, so any key type
    orders deterministically); modules and models get
    their sampled identity; ControlNets their chain; functions their qualified name and what they
    close over; other objects their class name and attributes.

    Example:
        >>> describe({"b": 1, "a": (2.5, "x")})
        ['dict', 'a', ['seq', 2.5, 'x'], 'b', 1]
    """
    seen = set() if seen is None else seen
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return _tensor(value)
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    if isinstance(value, bytes):
        return ["bytes", value]
    if depth >= MAX_DEPTH:
        return ["deep", type(value).__qualname__]
    if id(value) in seen:
        return ["cycle", type(value).__qualname__]
    seen = seen | {id(value)}
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda item: str(item[0]))
        return ["dict", *[part for key, item in items for part in (str(key), describe(item, depth + 1, seen))]]
    if isinstance(value, (list, tuple)):
        return ["seq", *[describe(item, depth + 1, seen) for item in value]]
    if isinstance(value, (set, frozenset)):
        return ["set", *sorted(str(describe(item, depth + 1, seen)) for item in value)]
    if isinstance(value, torch.nn.Module):
        return ["module", *module_identity(value)]
    if is_control(value):
        return _control(value, depth, seen)
    if hasattr(value, "patches") and hasattr(value, "model_options") and hasattr(value, "model"):
        return model_identity(value)  # a ModelPatcher (e.g. inside a patch)
    if callable(value) and not hasattr(value, "__dict__") or isinstance(
            value, (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial)):
        return _callable(value, depth, seen)
    attributes = {name: item for name, item in getattr(value, "__dict__", {}).items() if not name.startswith("_")}
    return ["object", f"{type(value).__module__}.{type(value).__qualname__}", describe(attributes, depth + 1, seen)]
