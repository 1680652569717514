"""Emulated ArC ONE: the serial protocol drivers/arc1.py documents, over a TCP socket (pyserial `socket://`).

The devices are the bench's (sim_backend/emulator/bench.py: the lab's device map, the rate model or
emulator.device_model); word and bit lines are the device map's rows and columns. What the emulator assumes
where arc1_pyqt's sources give no figure is stated here, once:

- Timing, on the instrument's emulated clock: every byte in and out at 921600 baud, 11 bits a byte (start, 8
  data, even parity, stop); a read-out READ_TIME_S; a pulse its width; the reset RESET_S (arc1_pyqt waits 1 s).
- A reading is 1/G of the device with READ_RELATIVE_SD relative noise (and the device model's own read noise).
- A read or pulse it cannot carry out (not initialised, a line outside the initialised words/bits, a pulse
  outside +-12 V or 90 ns..10 s, an injected `error` fault) answers FAILED_R: the ArC ONE has no error queue.
- A crosspoint with no device reads as an open circuit, OPEN_R.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from sim_backend.emulator.base import EmulatedInstrument

#: arguments after each opcode (arc1_pyqt's instrument.py)
ARGS = {"00": 0, "0": 7, "01": 2, "02": 2, "1": 2, "3": 4, "04": 2, "999": 0}


class EmulatedArcOne(EmulatedInstrument):
    KIND = "arc1"
    RESOURCE = "socket://127.0.0.1:{port}"  # pyserial opens the raw socket (drivers/arc1.py)
    REPLY_TERMINATOR = b""                  # float32 replies carry no terminator; the handshake's "1\n" its own
    FIRMWARE = (2, 0)
    SERIAL_S_PER_BYTE = 11 / 921600
    READ_TIME_S = 1e-3
    RESET_S = 1.0
    READ_RELATIVE_SD = 1e-4
    FAILED_R = -1.0
    OPEN_R = 1e12
    MAX_V, MIN_WIDTH_S, MAX_WIDTH_S = 12.0, 90e-9, 10.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.power_cycle()

    def power_cycle(self) -> None:
        self.initialised = False
        self.words = self.bits = 0
        self.vread = 0.0
        self.selected: tuple[int, int] | None = None
        self.fail_next = False

    def queue_error(self, code: int) -> None:
        self.fail_next = True  # no error queue: the next reading comes back failed

    def framer(self) -> Callable[[str], str | None]:
        parts: list[str] = []

        def frame(line: str) -> str | None:
            if not line.strip():
                return None
            parts.append(line.strip())
            if len(parts) - 1 < ARGS.get(parts[0], 0):
                return None
            command = " ".join(parts)
            parts.clear()
            return command

        return frame

    def instrument_time_s(self, op: str, args: list[str]) -> float:
        """What a command takes the ArC ONE: its bytes in (each value a line) and out at the serial rate, the pulse,
        the read-out, the reset."""
        bytes_in = sum(len(p) + 1 for p in (op, *args))
        if op == "3":
            try:
                width_s = min(max(float(args[3]), 0.0), self.MAX_WIDTH_S)
            except (ValueError, IndexError):
                width_s = 0.0
            return (bytes_in + 4) * self.SERIAL_S_PER_BYTE + width_s + self.READ_TIME_S
        if op == "1":
            return (bytes_in + 4) * self.SERIAL_S_PER_BYTE + self.READ_TIME_S
        out = {"0": 2, "999": 4}.get(op, 0)
        return (bytes_in + out) * self.SERIAL_S_PER_BYTE + (self.RESET_S if op == "00" else 0.0)

    def handle(self, line: str) -> bytes | None:
        op, *args = line.split()
        # Booked before the emulation runs: its own compute overlaps the instrument time, as the hardware's would.
        self.clock.advance(self.instrument_time_s(op, args))
        try:
            if op == "00":
                self.power_cycle()
                return None
            if op == "0":
                self.words, self.bits = int(args[1]), int(args[2])
                self.vread = float(args[6])
                self.initialised = 0 < self.words <= 32 and 0 < self.bits <= 32 and self.vread != 0
                return b"1\n" if self.initialised else b"0\n"
            if op == "01":
                self.vread = float(args[1])
                return None
            if op == "02":
                self.selected = (int(args[0]), int(args[1]))
                return None
            if op == "1":
                return self._reading(int(args[0]), int(args[1]))
            if op == "3":
                word, bit, volts, width = int(args[0]), int(args[1]), float(args[2]), float(args[3])
                if self._pulse(word, bit, volts, width):
                    return self._reading(word, bit)
                return self._failed()
            if op == "04":
                if self.selected is not None:
                    self._pulse(*self.selected, float(args[0]), float(args[1]))
                return None
            if op == "999":
                return struct.pack("<2H", *self.FIRMWARE)
        except (ValueError, IndexError):
            return self._failed() if op in ("1", "3") else None
        return None  # an opcode it does not know: ignored, as the firmware's command loop does

    def _failed(self) -> bytes:
        self.fail_next = False
        return struct.pack("<f", self.FAILED_R)

    def _addressable(self, word: int, bit: int) -> bool:
        return self.initialised and 1 <= word <= self.words and 1 <= bit <= self.bits

    def _pulse(self, word: int, bit: int, volts: float, width_s: float) -> bool:
        if not (self._addressable(word, bit) and abs(volts) <= self.MAX_V
                and self.MIN_WIDTH_S <= width_s <= self.MAX_WIDTH_S):
            return False
        self.bench.pulse(self.name, word, bit, volts, width_s)  # False: no device there, nothing changes
        return True

    def _reading(self, word: int, bit: int) -> bytes:
        if self.fail_next or not self._addressable(word, bit):
            return self._failed()
        g = self.bench.conductance(self.name, word, bit)
        r = self.OPEN_R if g is None or g <= 0 else 1.0 / g
        r *= 1 + self.READ_RELATIVE_SD * self.bench.rng.standard_normal()
        return struct.pack("<f", r)

    def outputs(self) -> dict:
        """Initialised, it applies its read voltage at every read; reset (the driver's shutdown), nothing."""
        return {"read_voltage_V": self.vread} if self.initialised else {}
