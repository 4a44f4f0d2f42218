"""CLIP-based frame metrics of Rerender-A-Video §5.2 (Table 2): Tem-Con and Fram-Acc.

* **Tem-Con**: cosine similarity of the CLIP image embeddings of consecutive output frames; the
  video's value is the mean over its frame pairs (Rerender reports 0.983 for its own results).
* **Fram-Acc**: the share of output frames whose CLIP image embedding is more similar (cosine) to the
  embedding of the *target* prompt (what the video should look like) than to that of the *source*
  prompt (what the input shows); Rerender reports 0.979.

The encoders are plain callables supplied by the caller (the node wraps ComfyUI's own CLIP vision and
CLIP text models, loaded by ComfyUI's loaders); nothing is ever downloaded. Image and text embeddings
must live in the same joint space: the *projected* embeddings of one CLIP family (e.g. OpenAI CLIP
ViT-L/14's vision tower with its own text tower, both 768 wide).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..common.errors import input_error

ImageEncoder = Callable[[torch.Tensor], torch.Tensor]
TextEncoder = Callable[[Sequence[str]], torch.Tensor]


def unit(embeddings: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (float32); zero rows stay zero.

    Example:
        >>> unit(torch.tensor([[3.0, 4.0]])).tolist()
        [[0.6000000238418579, 0.800000011920929]]
    """
    embeddings = embeddings.detach().to("cpu", torch.float32)
    return embeddings / embeddings.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass
class ClipMetrics:
    """CLIP encoders and prompts for Tem-Con and Fram-Acc.

    Attributes:
        encode_images: IMAGE ``[B,H,W,3]`` float32 in [0, 1] → projected image embeddings ``[B,D]``.
        encode_texts: prompts → projected text embeddings ``[T,D]``; ``None`` = no Fram-Acc.
        target_prompt: what the stylized video should show (Fram-Acc's positive).
        source_prompt: what the source video shows (Fram-Acc's negative).
        batch_size: frames per image-encoder call.
    """

    encode_images: ImageEncoder
    encode_texts: TextEncoder | None = None
    target_prompt: str = ""
    source_prompt: str = ""
    batch_size: int = 8

    def __post_init__(self) -> None:
        self._prompts: torch.Tensor | None = None

    @property
    def frame_accuracy(self) -> bool:
        """True when Fram-Acc can be computed (a text encoder and both prompts)."""
        return self.encode_texts is not None and bool(self.target_prompt.strip()) and bool(self.source_prompt.strip())

    def check(self) -> None:
        """Raise early if a text encoder is given without both prompts.

        Raises:
            InputError: naming ``target_prompt`` / ``source_prompt``.
        """
        if self.encode_texts is not None:
            for name, text in (("target_prompt", self.target_prompt), ("source_prompt", self.source_prompt)):
                if not text.strip():
                    raise input_error(name, "a prompt for Fram-Acc (target: the style asked for; source: what "
                                      "the input video shows)", "an empty text",
                                      ["write both prompts", "disconnect the CLIP text model to skip Fram-Acc"])

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Unit image embeddings ``[B,D]`` of frames ``[B,H,W,3]``; checks the width against the prompts'.

        Raises:
            InputError: the image and text embeddings differ in width (two CLIP families).
        """
        images = unit(self.encode_images(frames))
        prompts = self.prompt_embeddings()
        if prompts is not None and prompts.shape[-1] != images.shape[-1]:
            raise input_error("clip", f"a CLIP text model of the CLIP vision model's family (image embeddings "
                              f"{images.shape[-1]} wide)", f"text embeddings {prompts.shape[-1]} wide",
                              ["load the text encoder that belongs to the vision model (ViT-L/14 ↔ CLIP-L, "
                               "ViT-H/14 ↔ OpenCLIP-H, ViT-bigG ↔ CLIP-G)",
                               "disconnect the CLIP text model to skip Fram-Acc"])
        return images

    def prompt_embeddings(self) -> torch.Tensor | None:
        """Unit embeddings ``[2,D]`` of (target, source) prompts, computed once; ``None`` without Fram-Acc."""
        if not self.frame_accuracy:
            return None
        if self._prompts is None:
            self._prompts = unit(self.encode_texts([self.target_prompt, self.source_prompt]))
        return self._prompts


def consecutive_similarity(embeddings: torch.Tensor) -> list[float]:
    """Cosine similarity of each row with the next (rows already unit length): the Tem-Con terms.

    Example:
        >>> consecutive_similarity(unit(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])))
        [1.0, 0.0]
    """
    return [float(value) for value in (embeddings[:-1] * embeddings[1:]).sum(dim=-1)]


def prefers_target(embeddings: torch.Tensor, prompts: torch.Tensor) -> list[bool]:
    """Per frame, whether its similarity to the target prompt exceeds that to the source prompt (Fram-Acc).

    Args:
        embeddings: unit image embeddings ``[B,D]``.
        prompts: unit embeddings ``[2,D]`` of (target, source).

    Example:
        >>> prefers_target(unit(torch.tensor([[1.0, 0.2], [0.1, 1.0]])), unit(torch.eye(2)))
        [True, False]
    """
    similarity = embeddings @ prompts.T
    return [bool(value) for value in similarity[:, 0] > similarity[:, 1]]
