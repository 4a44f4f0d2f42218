"""Rerender Video for ComfyUI: text-guided, temporally coherent video-to-video translation.

A clean-room implementation of *Rerender A Video* (Yang et al., SIGGRAPH Asia 2023). Importing
the pack registers its nodes and does nothing else: no download, no compilation, no GPU memory.
"""

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # Imported as a lone module, not as the pack: pytest does this to the repository root of a checkout
    # whose folder name is not a Python identifier (e.g. "rerender-video"). There is nothing to register.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
