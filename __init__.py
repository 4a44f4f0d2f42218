"""Rerender Video for ComfyUI: text-guided, temporally coherent video-to-video translation.

A clean-room implementation of *Rerender A Video* (Yang et al., SIGGRAPH Asia 2023). Importing
the pack registers its nodes and does nothing else: no download, no compilation, no GPU memory.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
