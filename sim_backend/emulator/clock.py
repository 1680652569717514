"""Emulated time: what an instrument's operations take, scaled to wall time by the lab's emulator.time_scale.

Each instrument has its own clock (instruments run in parallel on a real bench). `advance(dt)` books dt
seconds of instrument time: `now_s` moves at once and the instrument stays busy for dt*time_scale of wall
time; `wait()` blocks until it is idle. The server waits before sending a reply, so a query answers no
sooner than the operations before it would have finished (time_scale 1 = real time, 0 = instant).
"""

from __future__ import annotations

import time


class EmulatedClock:
    def __init__(self, time_scale: float):
        if not time_scale >= 0:
            raise ValueError(f"emulator.time_scale: must be >= 0 (got {time_scale})")
        self.time_scale = float(time_scale)
        self.now_s = 0.0            # instrument time since power-on, s
        self._busy_until = time.monotonic()

    def advance(self, dt_s: float) -> None:
        """Book dt_s seconds of instrument time (an aperture, a settling or relay time)."""
        if dt_s < 0:
            raise ValueError(f"dt_s: instrument time cannot go backwards (got {dt_s})")
        self.now_s += dt_s
        self._busy_until = max(self._busy_until, time.monotonic()) + dt_s * self.time_scale

    def pending_s(self) -> float:
        """Wall seconds until the booked operations are done."""
        return max(0.0, self._busy_until - time.monotonic())

    def wait(self) -> None:
        remaining = self.pending_s()
        if remaining > 0:
            time.sleep(remaining)
