"""argparse types shared by every command: a bad value is a usage error naming the flag."""

from __future__ import annotations

import argparse
import math


def positive_float(text: str) -> float:
    """An argparse type: a finite number above zero (argparse names the flag when it is not)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number above 0")
    return v


def _whole(text: str, least: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < least:
        raise argparse.ArgumentTypeError(f"{text!r} must be {least} or more")
    return v


def positive_int(text: str) -> int:
    return _whole(text, 1)


def step_number(text: str) -> int:
    """A step number (Agent-Step): 0 (the intake) or more."""
    return _whole(text, 0)
