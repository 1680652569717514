"""Emulated time: what an instrument's operations take, scaled to wall time by the lab's emulator.time_scale.

Each instrument has its own clock (instruments run in parallel on a real bench). `advance(dt)` books dt
seconds of instrument time: `now_s` moves at once and the instrument stays busy for dt*time_scale of wall
time. A blocking operation (a reading) holds up every later reply; an overlapped one (a DAC's slew ramp)
holds up only *OPC?, *WAI and waitcomplete(), which set `opc_requested`. The server calls `wait()` before
sending a reply (time_scale 1 = real time, 0 = instant).
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
        self._overlapped_until = time.monotonic()
        self.opc_requested = False

    def advance(self, dt_s: float, blocking: bool = True) -> None:
        """Book dt_s seconds of instrument time (an aperture, a relay time; blocking=False: a slew ramp)."""
        if dt_s < 0:
            raise ValueError(f"dt_s: instrument time cannot go backwards (got {dt_s})")
        self.now_s += dt_s
        if blocking:
            self._busy_until = max(self._busy_until, time.monotonic()) + dt_s * self.time_scale
        else:
            self._overlapped_until = max(self._overlapped_until, time.monotonic()) + dt_s * self.time_scale

    def pending_s(self) -> float:
        """Wall seconds until the next reply may go out (all operations, after *OPC?)."""
        until = max(self._busy_until, self._overlapped_until) if self.opc_requested else self._busy_until
        return max(0.0, until - time.monotonic())

    def wait(self) -> None:
        remaining = self.pending_s()
        self.opc_requested = False
        if remaining > 0:
            time.sleep(remaining)
