"""Which decoder self-attention layers take cross-frame attention, for any UNet layout (``keyframe/ALGORITHM.md`` §3).

The paper (§4.1.1) replaces the self-attention of the SD1.5 decoder blocks that run at 1/4, 1/2 and
1/1 of the latent resolution (``output_blocks`` 3–11); the "loose" variant (reference PR #62) keeps
only the two finer resolutions (6–11). The choice is carried to other UNets **by latent
resolution**, never by block number:

* SD1.5 decoder (4 levels): 1/8 (blocks 0–2, no attention), 1/4 (3–5), 1/2 (6–8), 1/1 (9–11), one
  transformer layer per block → default 3–11, loose 6–11 (unchanged).
* SDXL decoder (3 levels): 1/4 (blocks 0–2, 10 transformer layers each), 1/2 (3–5, 2 layers each),
  1/1 (6–8, no attention) → default 0–5, loose 3–5. SDXL has no attention at 1/1, so it gets the
  paper's two other resolutions (loose: the one finer).

SDXL's coarse blocks stack 10 transformer layers; ``cfattn_depth`` (``keyframe/settings.py``) caps how
many of each block's layers (the first ones) take the anchor's and previous keyframe's K/V — it
trades feature-store memory (:meth:`UNetLayout.store_bytes`) for consistency. SD1.5's blocks have
one layer, so it changes nothing there.

A layer is named by one integer, its *layer id* ``block + LAYER_STRIDE·index`` (output block number,
transformer index in the block): the index-0 layer of a block keeps the block's number, as SD1.5
REFERENCEs always did.

The layout is read from the model's UNet config (ComfyUI ``model_config.unet_config``: ``channel_mult``,
``num_res_blocks``, ``transformer_depth_output``) by the adapter; this module takes plain numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

#: Layer id = output block + LAYER_STRIDE × transformer index within the block.
LAYER_STRIDE = 100
#: Latent down-sampling factors of the decoder levels the paper's choice uses (1/4, 1/2, 1/1 of the latent).
PAPER_FACTORS = (4, 2, 1)
#: The "loose" variant: only the two finer ones.
LOOSE_FACTORS = (2, 1)
#: ``cfattn_depth`` default and bounds (transformer layers per decoder block that take cross-frame attention).
DEFAULT_DEPTH = 5
MAX_DEPTH = 10


def layer_id(block: int, index: int = 0) -> int:
    """The id of transformer layer ``index`` of output block ``block``.

    Example:
        >>> layer_id(3), layer_id(2, 4), split_layer(402)
        (3, 402, (2, 4))
    """
    return int(block) + LAYER_STRIDE * int(index)


def split_layer(layer: int) -> tuple[int, int]:
    """``(output block, transformer index)`` of a layer id."""
    return int(layer) % LAYER_STRIDE, int(layer) // LAYER_STRIDE


def layer_name(layer: int) -> str:
    """``"output block 9"`` for a block's first layer, ``"output block 0, layer 4"`` otherwise."""
    block, index = split_layer(layer)
    return f"output block {block}" + (f", layer {index}" if index else "")


def describe_layers(layers: Sequence[int]) -> str:
    """Readable list of layer ids: ``"output blocks 3–11"`` or ``"output block 0 layers 0–4, …"``.

    Example:
        >>> describe_layers([3, 4, 5])
        'output blocks 3-5 (1 layer each)'
        >>> describe_layers([0, 100, 3])
        'output blocks 0 (2 layers), 3 (1 layer)'
    """
    per_block: dict[int, int] = {}
    for layer in layers:
        block, _ = split_layer(layer)
        per_block[block] = per_block.get(block, 0) + 1
    if not per_block:
        return "no layers"
    blocks = sorted(per_block)
    counts = set(per_block.values())
    plural = lambda n: f"{n} layer{'s' if n != 1 else ''}"  # noqa: E731
    if len(counts) == 1 and blocks == list(range(blocks[0], blocks[-1] + 1)) and len(blocks) > 1:
        return f"output blocks {blocks[0]}-{blocks[-1]} ({plural(counts.pop())} each)"
    return "output blocks " + ", ".join(f"{b} ({plural(per_block[b])})" for b in blocks)


@dataclass(frozen=True)
class DecoderBlock:
    """One output block of the UNet decoder.

    Attributes:
        number: its index in ``output_blocks``.
        factor: latent down-sampling factor it runs at (1 = full latent resolution).
        channels: channels of its transformer layers.
        depth: transformer layers in it (0 = no self-attention).
    """

    number: int
    factor: int
    channels: int
    depth: int


@dataclass(frozen=True)
class UNetLayout:
    """A UNet decoder's blocks, and the cross-frame-attention layers chosen on it.

    Example:
        >>> SD15_LAYOUT.layers(loose=False) == tuple(range(3, 12)), SD15_LAYOUT.layers(loose=True)
        (True, (6, 7, 8, 9, 10, 11))
        >>> [split_layer(layer)[0] for layer in SDXL_LAYOUT.layers(loose=True)]
        [3, 3, 4, 4, 5, 5]
    """

    family: str
    blocks: tuple[DecoderBlock, ...]

    def chosen_blocks(self, loose: bool) -> tuple[DecoderBlock, ...]:
        """Blocks with self-attention at the paper's resolutions (1/4, 1/2, 1/1; ``loose``: 1/2, 1/1)."""
        factors = LOOSE_FACTORS if loose else PAPER_FACTORS
        return tuple(block for block in self.blocks if block.depth > 0 and block.factor in factors)

    def layers(self, loose: bool = False, depth: int = DEFAULT_DEPTH) -> tuple[int, ...]:
        """Layer ids that take cross-frame attention: the first ``min(depth, block depth)`` layers of each
        chosen block, sorted by block then layer."""
        return tuple(layer_id(block.number, index) for block in self.chosen_blocks(loose)
                     for index in range(min(int(depth), block.depth)))

    def block(self, number: int) -> DecoderBlock:
        """The output block ``number``."""
        return self.blocks[int(number)]

    def store_bytes(self, latent_height: int, latent_width: int, steps: int, layers: Sequence[int],
                    branches: int = 2, bytes_per_value: int = 2) -> int:
        """Bytes of one feature store (one keyframe's recorded self-attention inputs), from the shapes.

        A layer of a block at factor ``f`` records ``(h/f)·(w/f)`` tokens of ``channels`` values per
        step and CFG branch.

        Example:
            >>> round(SD15_LAYOUT.store_bytes(64, 64, 20, SD15_LAYOUT.layers()) / 1e6)  # 512², fp16
            551
        """
        total = 0
        for layer in layers:
            block = self.block(split_layer(layer)[0])
            total += (latent_height // block.factor) * (latent_width // block.factor) * block.channels
        return total * branches * steps * bytes_per_value


def decoder_layout(family: str, model_channels: int, channel_mult: Sequence[int], num_res_blocks: Sequence[int] | int,
                   transformer_depth_output: Sequence[int]) -> UNetLayout:
    """The decoder of an LDM UNet from its config (ComfyUI ``unet_config`` conventions).

    Output blocks run from the deepest level to the shallowest, ``num_res_blocks[level] + 1`` per
    level; level ``l`` runs at factor ``2**l``; ``transformer_depth_output`` lists the blocks'
    depths shallowest first (ComfyUI pops it from the end).

    Raises:
        ValueError: the depths do not match the number of output blocks.

    Example:
        >>> [(b.number, b.factor, b.depth) for b in SDXL_LAYOUT.blocks][::3]
        [(0, 4, 10), (3, 2, 2), (6, 1, 0)]
    """
    levels = len(channel_mult)
    res = [int(num_res_blocks)] * levels if isinstance(num_res_blocks, int) else [int(n) for n in num_res_blocks]
    depths = [int(d) for d in transformer_depth_output]
    count = sum(n + 1 for n in res)
    if len(depths) != count:
        raise ValueError(f"transformer_depth_output has {len(depths)} entries for {count} output blocks")
    blocks, number = [], 0
    for level in reversed(range(levels)):
        for _ in range(res[level] + 1):
            blocks.append(DecoderBlock(number, 2 ** level, int(model_channels) * int(channel_mult[level]),
                                       depths[count - 1 - number]))
            number += 1
    return UNetLayout(family, tuple(blocks))


#: The real SD1.5 UNet (320 channels, ×1/2/4/4, 2 res blocks per level, one transformer layer per block).
SD15_LAYOUT = decoder_layout("SD1.5", 320, (1, 2, 4, 4), (2, 2, 2, 2), (1,) * 9 + (0,) * 3)
#: The real SDXL base UNet (320 channels, ×1/2/4; 10 layers at 1/4, 2 at 1/2, none at 1/1).
SDXL_LAYOUT = decoder_layout("SDXL", 320, (1, 2, 4), (2, 2, 2), (0, 0, 0, 2, 2, 2, 10, 10, 10))
