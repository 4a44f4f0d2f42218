"""Shared helpers of the pack: errors, input checks, setting declarations, the disk cache, memory checks.

Nothing here imports ComfyUI; everything works on plain Python, NumPy and torch objects.
"""
