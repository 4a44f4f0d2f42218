"""Exact frame rates: every fps in the pack is a :class:`fractions.Fraction` from load to save.

ComfyUI passes fps between nodes as a FLOAT (core GetVideoComponents, VideoHelperSuite), so a rate
like NTSC film, 24000/1001 = 23.976023976…, arrives as a rounded float. :func:`exact_fps` turns it
back into the fraction it came from:

1. a float is replaced by the nearest fraction with a denominator of at most 1001
   (``Fraction.limit_denominator(1001)``), which recovers every n·1000/1001 rate and every rate
   with up to three decimals;
2. a rate within 10 ppm of an NTSC rate n·1000/1001 is taken to be that rate. This catches the
   rounded spellings 23.976, 29.97 and 59.94 that users type and that AVI headers store (e.g.
   Megamind.avi's header says 2997/125), while no integer rate (0.1 % away) is ever moved.
"""

from __future__ import annotations

import math
from fractions import Fraction
from numbers import Real

from ..common.errors import input_error

#: Largest denominator kept when a float rate is turned into a fraction.
MAX_DENOMINATOR = 1001
#: Relative distance under which a rate is snapped to the NTSC rate n·1000/1001.
NTSC_TOLERANCE = Fraction(1, 100_000)


def exact_fps(value: float | int | Fraction, name: str = "fps") -> Fraction:
    """Return the exact frame rate meant by ``value`` (see the module docstring for the rule).

    Args:
        value: frames per second as a float, int or Fraction; must be finite and > 0.
        name: the input's name for the error message.

    Returns:
        The rate as a Fraction (frames per second).

    Raises:
        InputError: ``value`` is not a positive finite number.

    Example:
        >>> exact_fps(23.976023976023978), exact_fps(29.97), exact_fps(Fraction(2997, 125))
        (Fraction(24000, 1001), Fraction(30000, 1001), Fraction(24000, 1001))
        >>> exact_fps(25.0), exact_fps(12.5)
        (Fraction(25, 1), Fraction(25, 2))
    """
    if isinstance(value, bool) or not isinstance(value, (Real, Fraction)):
        raise input_error(name, "a frame rate in frames per second (a number > 0)", repr(value),
                          "connect the fps output of Rerender Load Video or type a rate such as 24")
    if isinstance(value, Fraction):
        rate = value
    elif isinstance(value, int):
        rate = Fraction(value)
    else:
        if not math.isfinite(float(value)):
            raise input_error(name, "a finite frame rate > 0", value, "type a rate such as 24 or 23.976")
        rate = Fraction(float(value)).limit_denominator(MAX_DENOMINATOR)
    if rate <= 0:
        raise input_error(name, "a frame rate > 0", value, "type a rate such as 24 or 23.976")
    ntsc_multiple = round(rate * 1001 / 1000)
    if ntsc_multiple > 0:
        ntsc = Fraction(1000 * ntsc_multiple, 1001)
        if rate != ntsc and abs(rate - ntsc) <= rate * NTSC_TOLERANCE:
            return ntsc
    return rate
