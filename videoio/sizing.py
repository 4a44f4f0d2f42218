"""Output frame size of a load: ``custom_width`` / ``custom_height`` and ``size_multiple``.

Rule (resize to cover, then centre-crop):

1. The *requested* size is ``custom_width`` × ``custom_height``. A 0 keeps the aspect ratio: with
   only one of them set the other follows from the source aspect (rounded to whole pixels); with
   both 0 the requested size is the source size.
2. The frame is resized, keeping its aspect ratio, to the smallest size that covers the requested
   size (OpenCV ``INTER_AREA`` when shrinking, Lanczos when enlarging; no resize when it already
   has that size).
3. It is centre-cropped to the requested size rounded *down* to a multiple of ``size_multiple``
   (8 by default, what an SD VAE needs; 64 gives SD-friendly sizes such as 704×512).

Nothing is ever stretched, and rounding to the multiple only crops (it never rescales), so with
both sizes 0 the loaded frames are the source pixels, centre-cropped to the multiple.

Videos whose container carries a display rotation (phones filming upright) are first turned the
way a player shows them (``rotation``, a multiple of 90 degrees counter-clockwise), as
VideoHelperSuite's OpenCV loader does; sizes above are those of the upright frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..common.errors import input_error


@dataclass(frozen=True)
class SizePlan:
    """How each decoded frame is resized and cropped.

    Attributes:
        source: ``(width, height)`` of the upright source frames in pixels (after ``rotation``).
        resized: ``(width, height)`` after the cover resize (equal to ``source`` when no resize).
        crop_x, crop_y: top-left corner of the centre crop in the resized frame, pixels.
        output: ``(width, height)`` of the loaded frames in pixels.
        rotation: counter-clockwise turn applied to decoded frames first: 0, 90, 180 or 270.
    """

    source: tuple[int, int]
    resized: tuple[int, int]
    crop_x: int
    crop_y: int
    output: tuple[int, int]
    rotation: int = 0

    @property
    def needs_resize(self) -> bool:
        """True if frames are rescaled (not only cropped)."""
        return self.resized != self.source

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Turn, resize and crop one decoded uint8 frame ``[H,W,3]`` to ``[h,w,3]`` (output size).

        The result may be a view into ``frame`` (a crop without resize or turn).
        """
        if self.rotation:
            frame = cv2.rotate(frame, _TURNS[self.rotation])
        if self.needs_resize:
            shrinking = self.resized[0] < self.source[0]
            frame = cv2.resize(frame, self.resized, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4)
        width, height = self.output
        return frame[self.crop_y:self.crop_y + height, self.crop_x:self.crop_x + width]


_TURNS = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}


def plan_size(source_width: int, source_height: int, custom_width: int = 0, custom_height: int = 0,
              size_multiple: int = 8, rotation: int = 0) -> SizePlan:
    """Work out resize and crop for a load (see the module docstring for the rule).

    Args:
        source_width, source_height: upright frame size in pixels (after ``rotation``).
        custom_width, custom_height: requested size in pixels; 0 keeps the aspect ratio.
        size_multiple: the output width and height are multiples of this (1 = any size).
        rotation: counter-clockwise turn of the decoded frames, 0, 90, 180 or 270 degrees.

    Returns:
        The :class:`SizePlan`.

    Raises:
        InputError: negative sizes, ``size_multiple`` < 1, or ``size_multiple`` larger than the
            requested width or height (nothing would be left after rounding down).

    Example:
        >>> plan_size(720, 528, size_multiple=64).output  # crop only
        (704, 512)
        >>> p = plan_size(720, 528, 512, 0); p.resized, p.output
        ((512, 375), (512, 368))
        >>> plan_size(720, 528, 512, 512).resized  # cover 512x512, then crop the width
        (698, 512)
    """
    for name, value in (("custom_width", custom_width), ("custom_height", custom_height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise input_error(name, "a size in pixels >= 0 (0 keeps the aspect ratio)", repr(value),
                              f"set {name} to 0 or a positive number of pixels")
    if isinstance(size_multiple, bool) or not isinstance(size_multiple, int) or size_multiple < 1:
        raise input_error("size_multiple", "a whole number >= 1", repr(size_multiple),
                          "use 8 (any SD model) or 64 (SD-friendly sizes)")
    want_width, want_height = _requested(source_width, source_height, custom_width, custom_height)
    out_width = want_width // size_multiple * size_multiple
    out_height = want_height // size_multiple * size_multiple
    if out_width == 0 or out_height == 0:
        raise input_error(
            "size_multiple", f"at most {min(want_width, want_height)}, the smaller side of the requested "
            f"{want_width}x{want_height} frame (source {source_width}x{source_height})", size_multiple,
            [f"lower size_multiple to {_largest_fitting(min(want_width, want_height))} or less",
             "raise custom_width / custom_height (0 keeps the source size)"])
    scale = max(want_width / source_width, want_height / source_height)
    resized = (max(want_width, round(source_width * scale)), max(want_height, round(source_height * scale)))
    return SizePlan((source_width, source_height), resized, (resized[0] - out_width) // 2,
                    (resized[1] - out_height) // 2, (out_width, out_height), rotation % 360)


def _requested(source_width: int, source_height: int, custom_width: int, custom_height: int) -> tuple[int, int]:
    if custom_width and custom_height:
        return custom_width, custom_height
    if custom_width:
        return custom_width, max(1, round(source_height * custom_width / source_width))
    if custom_height:
        return max(1, round(source_width * custom_height / source_height)), custom_height
    return source_width, source_height


def _largest_fitting(side: int) -> int:
    power = 1
    while power * 2 <= side:
        power *= 2
    return power
