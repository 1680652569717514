"""A serial crossbar programming board (home-built), over pyserial.

Line protocol (ASCII, one command per line, "\\n" terminated; every command gets one reply line):

    *IDN?                         -> XBAR,<model>,<serial>,<firmware>
    RST                           -> OK            (pulse driver off, read voltage 0)
    VREAD <volts>                 -> OK            (read voltage, |V| <= 0.2)
    READ <row> <col>              -> <siemens>     (conductance at the read voltage)
    PULSE <row> <col> <V> <s>     -> OK            (V > 0: SET, V < 0: RESET; width in s)
    ERR?                          -> 0,"No error" | <code>,"<message>"

A bad command answers `ERR <code>` at once (-113 undefined header, -222 data out of range)
and also queues the error for ERR?. pyserial opens a real port (`/dev/ttyUSB0`) or
`socket://host:port` (the emulator).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import serial

from drivers.retry import InstrumentFault
from drivers.session import Instrument, InstrumentError, LimitError, VisaSession, check_limit, resolve_resource

if TYPE_CHECKING:
    from drivers.instrument_config import DriverSettings, InstrumentConfig


class SerialPort:
    """pyserial with a VISA-like write/query, so the board logs like every other instrument."""

    def __init__(self, url: str, baudrate: int = 115200, timeout_s: float = 5.0):
        try:
            self.port = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout_s)
        except (serial.SerialException, ValueError) as err:
            raise InstrumentError(f"could not open serial port {url}: {err}") from None

    def write(self, command: str) -> None:
        self.port.write((command + "\n").encode())

    def query(self, command: str) -> str:
        self.write(command)
        line = self.port.readline()
        if not line.endswith(b"\n"):
            raise InstrumentError(f"serial: no reply to {command!r} before the timeout")
        return line.decode().strip()

    def close(self) -> None:
        self.port.close()


class XbarBoard(Instrument):
    KIND = "xbar_board"
    ROLE = "board"
    MAX_V = 5.0  # pulse amplitude
    IDN_MATCH = "XBAR"
    ERROR_QUERY = "ERR?"
    NO_ERROR_PREFIXES = ("0,",)
    CMD = {
        "reset": "RST",
        "vread": "VREAD {v:.6g}",
        "read": "READ {row} {col}",
        "pulse": "PULSE {row} {col} {v:.6g} {w:.6g}",
    }

    def __init__(self, *args: Any, max_pulse_V: float, max_pulse_width_s: float, read_voltage_V: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_pulse_V, self.max_pulse_width_s = max_pulse_V, max_pulse_width_s
        self.read_voltage_V = read_voltage_V

    @classmethod
    def open_port(cls, resource: str, registry: Path | None = None, baudrate: int = 115200,
                  timeout_s: float = 5.0) -> SerialPort:
        return SerialPort(resolve_resource(resource, registry), baudrate, timeout_s)

    @classmethod
    def open_transport(cls, cfg: InstrumentConfig, session: VisaSession) -> SerialPort:
        return cls.open_port(cfg.resource, session.registry, cfg.baudrate, cfg.timeout_ms / 1e3)

    @classmethod
    def settings(cls, cfg: DriverSettings) -> dict[str, Any]:
        lim = cfg.limits  # the lab config requires both pulse limits of a board
        return {"max_pulse_V": lim.max_pulse_V, "max_pulse_width_s": lim.max_pulse_width_s,
                "read_voltage_V": cfg.read_voltage_V}

    def _ok(self, command: str, idempotent: bool = True) -> None:
        reply = self.query(command, idempotent=idempotent)
        if reply != "OK":
            raise InstrumentError(f"{self.name}: {reply} after {command!r}")

    def connect(self) -> None:
        self.identify()
        self._ok(self.CMD["reset"])
        check_limit(f"{self.name} read voltage", self.read_voltage_V, 0.2, "V")
        self._ok(self.CMD["vread"].format(v=self.read_voltage_V))

    def read_conductance(self, row: int, col: int) -> float:
        reply = self.query(self.CMD["read"].format(row=row, col=col))
        try:
            return float(reply)
        except ValueError:
            raise InstrumentError(f"{self.name}: {reply} after READ {row} {col}") from None

    def pulse(self, row: int, col: int, volts: float, width_s: float) -> None:
        """One SET (V > 0) or RESET (V < 0) pulse; refused past the safe limits before anything is sent."""
        check_limit(f"{self.name} pulse amplitude", volts, self.max_pulse_V, "V")
        if not 0 < width_s <= self.max_pulse_width_s:
            raise LimitError(f"{self.name} pulse width: {width_s:.3g} s outside (0, {self.max_pulse_width_s:.3g}] s")
        self.writes_unchecked += 1  # a pulse changes the device: its errors are read at the end of the step
        self.last_write = self.CMD["pulse"].format(row=row, col=col, v=volts, w=width_s)
        # Not idempotent: a lost reply raises UnconfirmedWrite, and write-verify reads the device back.
        self._ok(self.CMD["pulse"].format(row=row, col=col, v=volts, w=width_s), idempotent=False)

    def reconcile(self, command: str, lost: list[str]) -> None:
        """After a reconnect: a read refused for want of a read voltage means the board was reset (stop)."""
        if not self.idn:
            return
        reply = self.query(self.CMD["read"].format(row=0, col=0))
        if reply.startswith("ERR"):
            self.query(self.ERROR_QUERY)  # pop the error this probe queued: a later session must not inherit it
            raise InstrumentFault(self.name, command, f"instrument reset (READ answered {reply} after a reconnect: "
                                  "its read voltage is back at the power-on 0 V)")

    def shutdown(self) -> None:
        self.query(self.CMD["reset"])
