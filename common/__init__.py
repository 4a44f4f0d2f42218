"""Shared helpers of the pack: errors, input checks, the disk cache, memory checks.

Nothing here imports ComfyUI; everything works on plain Python, NumPy and torch objects.
"""
