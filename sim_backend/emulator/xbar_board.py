"""Emulated serial crossbar programming board (the home-built line protocol drivers/xbar_board.py documents)."""

from __future__ import annotations

from collections import deque

from sim_backend.emulator.base import EmulatedInstrument
from sim_backend.emulator.scpi import ERROR_TEXT


class EmulatedXbarBoard(EmulatedInstrument):
    """The serial programming board's line protocol (drivers/xbar_board.py documents it)."""

    KIND = "xbar_board"
    RESOURCE = "socket://127.0.0.1:{port}"  # pyserial opens the raw socket (drivers/xbar_board.py)
    IDN = "XBAR,EMU-1,0001,1.0"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.errors: deque[tuple[int, str]] = deque()
        self.vread = 0.0

    def error(self, code: int, message: str) -> None:
        self.errors.append((code, message))

    def queue_error(self, code: int) -> None:
        self.error(code, ERROR_TEXT.get(code, "Error"))

    def power_cycle(self) -> None:
        self.errors.clear()
        self.vread = 0.0

    def handle(self, line: str) -> str | None:
        parts = line.strip().split()
        if not parts:
            return None
        cmd, args = parts[0].upper(), parts[1:]
        try:
            if cmd == "*IDN?" and not args:
                return self.IDN
            if cmd == "RST" and not args:
                self.vread = 0.0
                return "OK"
            if cmd == "ERR?" and not args:
                code, msg = self.errors.popleft() if self.errors else (0, "No error")
                return f'{code},"{msg}"'
            if cmd == "VREAD" and len(args) == 1:
                v = float(args[0])
                if not 0 < abs(v) <= 0.2:
                    return self._bad(-222, "Data out of range")
                self.vread = v
                return "OK"
            if cmd == "READ" and len(args) == 2:
                if self.vread == 0:
                    return self._bad(-200, "Execution error; read voltage not set")
                g = self.bench.conductance(self.name, int(args[0]), int(args[1]))
                if g is None:
                    return self._bad(-222, "Data out of range")
                return f"{g * (1 + 1e-4 * self.bench.rng.standard_normal()):.6e}"
            if cmd == "PULSE" and len(args) == 4:
                v, w = float(args[2]), float(args[3])
                if abs(v) > 5.0 or not 0 < w <= 1e-3:
                    return self._bad(-222, "Data out of range")
                if not self.bench.pulse(self.name, int(args[0]), int(args[1]), v, w):
                    return self._bad(-222, "Data out of range")
                return "OK"
        except ValueError:
            return self._bad(-222, "Data out of range")
        return self._bad(-113, "Undefined header")

    def _bad(self, code: int, msg: str) -> str:
        self.error(code, msg)
        return f"ERR {code}"

    def outputs(self) -> dict:
        return {"read_voltage_V": self.vread} if self.vread else {}
