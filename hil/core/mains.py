"""The mains frequency: what a power-line cycle (PLC) lasts, the unit of every instrument's integration time."""

from __future__ import annotations

#: The mains frequencies in use, Hz (1 PLC = 20 ms at 50 Hz, 16.7 ms at 60 Hz).
LINE_FREQUENCIES_HZ = (50.0, 60.0)


def check_line_frequency(hz: float) -> float:
    """hz itself when it is a mains frequency; else ValueError (pydantic reports it with the field's name).

    A float checked here rather than Literal[50.0, 60.0]: type checkers allow no float literals."""
    if hz not in LINE_FREQUENCIES_HZ:
        raise ValueError("the mains frequency is 50 or 60 Hz")
    return hz
