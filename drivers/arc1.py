"""ArC Instruments' ArC ONE array controller (32x32 crossbar), over pyserial: a programmer in the board role.

The serial protocol, as arc1_pyqt's `arc1pyqt/instrument.py` (class ArC1) writes it: ASCII lines, one value a
line; an opcode line, then its arguments. Readings come back as raw little-endian float32 resistances (ohm),
4 bytes each, with no terminator; the initialise handshake answers one text line "1".

    00                                             reset the mbed (no reply; arc1_pyqt waits 1 s)
    0  cycles words bits readmode sessionmode sneakpath Vread   initialise       -> "1\\n"
    01 readmode Vread                               update the read (no reply)
    02 word bit                                     select a crosspoint (no reply)
    1  word bit                                     read one device              -> float32 R
    3  word bit V width_s                           pulse one device, then read  -> float32 R
    04 V width_s                                    pulse the selected device (no reply)
    999                                             firmware version             -> 2 x uint16 (old firmware: none)

Here a command is written as its lines joined by spaces ("3 5 9 1.2 1e-06"), which is also how the command log
shows it; the port sends each part as a line. Word and bit lines are numbered 1..32 (the lab's device map gives
them directly: `row_offset: 1` puts a layer's first lower node on word line 1).

The ArC ONE has no error queue: every pulse is confirmed by the reading it returns. A reading that is not a
positive resistance is a failed read-out and stops the run; bytes that are no float32 reading (not finite, or
more than the 4 bytes of a reply) are garbage and, like a timeout, are retried once on a fresh connection.

Wiring: USB (the mbed's virtual serial port, e.g. /dev/ttyACM0) at 921600 baud, 8 data bits, even parity, one
stop bit; `socket://host:port` reaches the emulated one (`hil emulate`), where baud and parity do not apply.
"""

from __future__ import annotations

import math
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import serial

from drivers.errors import InstrumentError, LimitError
from drivers.retry import GARBAGE, InstrumentFault, TransientFault
from drivers.session import Instrument, VisaSession, check_limit, resolve_resource

if TYPE_CHECKING:
    from drivers.instrument_config import DriverSettings, InstrumentConfig

#: what each opcode answers: a text line, one float32, two uint16, or nothing
REPLY_LINE, REPLY_FLOAT32, REPLY_VERSION = "line", "float32", "version"
REPLIES = {"0": REPLY_LINE, "1": REPLY_FLOAT32, "3": REPLY_FLOAT32, "999": REPLY_VERSION}
#: a resistance beyond this is no reading (the ArC ONE reads up to some hundred Mohm), ohm
MAX_PLAUSIBLE_R = 1e13


class ArcPort:
    """pyserial framed as the ArC ONE talks: commands as lines out, replies by opcode (line, float32, version)."""

    BAUDRATE = 921600  # the ArC ONE's USB serial: 921600 baud, 8E1 (arc1_pyqt's ArC1)

    def __init__(self, url: str, baudrate: int = BAUDRATE, timeout_s: float = 7.0):
        try:
            self.port = serial.serial_for_url(url, baudrate=baudrate, parity=serial.PARITY_EVEN,
                                              stopbits=serial.STOPBITS_ONE, bytesize=serial.EIGHTBITS,
                                              timeout=timeout_s)
        except (serial.SerialException, ValueError) as err:
            raise InstrumentError(f"could not open serial port {url}: {err}") from None
        self.timeout_s = timeout_s

    def write(self, command: str) -> None:
        self.port.write("".join(part + "\n" for part in command.split()).encode())

    def _read(self, size: int, command: str) -> bytes:
        data = self.port.read(size)
        if len(data) < size:
            raise InstrumentError(f"serial: no reply to {command!r} before the timeout ({len(data)} of {size} bytes)")
        return data

    def query(self, command: str) -> str:
        """Send a command and read its reply, as text: a reading as its float32 value, the version as major.minor."""
        self.write(command)
        kind = REPLIES.get(command.split()[0])
        if kind == REPLY_LINE:
            line = self.port.readline()
            if not line.endswith(b"\n"):
                raise InstrumentError(f"serial: no reply to {command!r} before the timeout")
            return line.decode(errors="replace").strip()
        if kind == REPLY_VERSION:
            major, minor = struct.unpack("<2H", self._read(4, command))
            return f"{major}.{minor}"
        if kind != REPLY_FLOAT32:
            raise ValueError(f"ArC ONE command {command!r} has no reply")
        raw = self._read(4, command)
        (value,) = struct.unpack("<f", raw)
        # A reply is exactly 4 bytes and nothing else is on its way: more bytes, or no finite float, is garbage.
        if self.port.in_waiting or not math.isfinite(value) or abs(value) > MAX_PLAUSIBLE_R:
            raise TransientFault(GARBAGE, repr(raw + self.port.read(self.port.in_waiting)))
        return repr(float(value))

    def query_version(self, timeout_s: float) -> tuple[int, int] | None:
        """The firmware version, or None when the firmware does not report one (it stays silent)."""
        old, self.port.timeout = self.port.timeout, timeout_s
        try:
            self.write("999")
            data = self.port.read(4)
        finally:
            self.port.timeout = old
        if len(data) < 4:
            return None
        major, minor = struct.unpack("<2H", data)
        return major, minor

    def close(self) -> None:
        self.port.close()


class ArcOne(Instrument):
    KIND = "arc1"
    ROLE = "board"
    MAX_V = 12.0                 # arc1_pyqt's voltage entries span +-12 V
    MIN_PULSE_WIDTH_S = 90e-9    # arc1_pyqt's manual pulse panel: 90 ns ..
    MAX_PULSE_WIDTH_S = 10.0     # .. 10 s
    LINE_RANGE = (1, 32)         # word and bit lines of its 32x32 array
    RESET_WAIT_S = 1.0           # after "00" the mbed reboots; arc1_pyqt waits 1 s before initialising
    VERSION_TIMEOUT_S = 2.0      # arc1_pyqt's: firmware that does not answer 999 is old, not broken
    FAILED_READ = "a failed read-out"
    #: the initialise handshake's settings (arc1_pyqt's HWConfig defaults): 50 cycles, 32x32, readmode 2 (TIA4P),
    #: session 0 (live, local), sneak-path option 1 (V/2: unselected lines at half the pulse)
    HW = {"cycles": 50, "words": 32, "bits": 32, "readmode": 2, "sessionmode": 0, "sneakpath": 1}
    CMD = {
        "reset": "00",
        "init": "0 {cycles} {words} {bits} {readmode} {sessionmode} {sneakpath} {vread:f}",
        "update_read": "01 {readmode} {vread:f}",
        "select": "02 {word} {bit}",
        "read": "1 {word} {bit}",
        # %f for the volts as arc1_pyqt's pulseread_one; the width as str(float) (its modules do): %f would round
        # widths under a microsecond to 0
        "pulse_read": "3 {word} {bit} {v:f} {w!r}",
    }

    def __init__(self, *args: Any, max_pulse_V: float, max_pulse_width_s: float, read_voltage_V: float,
                 reset_wait_s: float = RESET_WAIT_S, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_pulse_V, self.max_pulse_width_s = max_pulse_V, max_pulse_width_s
        self.read_voltage_V = read_voltage_V
        self.reset_wait_s = reset_wait_s
        self.firmware: tuple[int, int] | None = None

    @classmethod
    def open_port(cls, resource: str, registry: Path | None = None, baudrate: int = ArcPort.BAUDRATE,
                  timeout_s: float = 7.0) -> ArcPort:
        return ArcPort(resolve_resource(resource, registry), baudrate, timeout_s)

    @classmethod
    def open_transport(cls, cfg: InstrumentConfig, session: VisaSession) -> ArcPort:
        if cfg.baudrate != ArcPort.BAUDRATE:
            raise InstrumentError(f"baudrate: an ArC ONE talks at {ArcPort.BAUDRATE} baud (got {cfg.baudrate})")
        return cls.open_port(cfg.resource, session.registry, cfg.baudrate, cfg.timeout_ms / 1e3)

    @classmethod
    def settings(cls, cfg: DriverSettings) -> dict[str, Any]:
        lim = cfg.limits  # the lab config requires both pulse limits of a programmer
        # An emulated ArC ONE reboots in emulated time: the wait scales with the emulator's clock.
        return {"max_pulse_V": lim.max_pulse_V, "max_pulse_width_s": lim.max_pulse_width_s,
                "read_voltage_V": cfg.read_voltage_V, "reset_wait_s": cls.RESET_WAIT_S * cfg.clock_scale}

    # ---- checks before anything is sent --------------------------------------------------------------------
    def _lines(self, row: int, col: int) -> tuple[int, int]:
        assert self.LINE_RANGE is not None  # set just above
        lo, hi = self.LINE_RANGE
        for what, n in (("word line", row), ("bit line", col)):
            if not lo <= n <= hi:
                raise LimitError(f"{self.name}: {what} {n} outside {lo}..{hi}")
        return row, col

    def _check_pulse(self, volts: float, width_s: float) -> None:
        check_limit(f"{self.name} pulse amplitude", volts, self.max_pulse_V, "V")
        if not self.MIN_PULSE_WIDTH_S <= width_s <= self.max_pulse_width_s:
            raise LimitError(f"{self.name} pulse width: {width_s:.3g} s outside [{self.MIN_PULSE_WIDTH_S:.3g}, "
                             f"{self.max_pulse_width_s:.3g}] s")

    # ---- protocol ------------------------------------------------------------------------------------------
    def _resistance(self, command: str, idempotent: bool = True) -> float:
        reply = self.query(command, idempotent=idempotent)
        r = float(reply)
        if not r > 0:
            self.log.record(self.name, command, reply, fault="instrument error", action="stop")
            raise InstrumentFault(self.name, command, f"instrument error: {self.FAILED_READ} (R = {r:g} ohm)")
        return r

    def connect(self) -> None:
        """The initialise sequence (arc1_pyqt's ArC1.initialise), then the firmware version."""
        check_limit(f"{self.name} read voltage", self.read_voltage_V, 0.2, "V")
        self.write(self.CMD["reset"])
        self.unconfirmed.clear()  # a reset is no setting to read back
        time.sleep(self.reset_wait_s)
        reply = self.query(self.CMD["init"].format(**self.HW, vread=self.read_voltage_V))
        if reply != "1":
            raise InstrumentError(f"{self.name}: the initialise handshake answered {reply!r}, expected '1' "
                                  "(is an ArC ONE at this port?)")
        self.write(self.CMD["update_read"].format(readmode=self.HW["readmode"], vread=self.read_voltage_V))
        self.firmware = self.resource.query_version(min(self.VERSION_TIMEOUT_S, self.resource.timeout_s))
        self.idn = "ArC ONE, firmware " + (f"{self.firmware[0]}.{self.firmware[1]}" if self.firmware
                                          else "not reported")
        self.log.record(self.name, "999", self.idn)
        self.writes_unchecked = 0

    def identify(self) -> str:
        """No *IDN? on an ArC ONE: the initialise handshake identifies it (connect)."""
        return self.idn

    def read_resistance(self, row: int, col: int) -> float:
        """One device at the read voltage, ohm (word line row, bit line col)."""
        word, bit = self._lines(row, col)
        return self._resistance(self.CMD["read"].format(word=word, bit=bit))

    def read_conductance(self, row: int, col: int) -> float:
        return 1.0 / self.read_resistance(row, col)

    def pulse_read(self, row: int, col: int, volts: float, width_s: float) -> float:
        """One pulse (V > 0 positive on the word line) and the device read after it, S; refused past the limits
        before anything is sent. A lost reply raises UnconfirmedWrite: the caller reads the device back."""
        word, bit = self._lines(row, col)
        self._check_pulse(volts, width_s)
        command = self.CMD["pulse_read"].format(word=word, bit=bit, v=volts, w=float(width_s))
        self.last_write = command
        return 1.0 / self._resistance(command, idempotent=False)  # never pulsed again blindly

    def pulse(self, row: int, col: int, volts: float, width_s: float) -> None:
        self.pulse_read(row, col, volts, width_s)

    def check_errors(self, after: str = "") -> None:
        """No error queue: each pulse's reading confirmed it (a failed one raised at once)."""
        self.writes_unchecked = 0

    def reconcile(self, command: str, lost: list[str]) -> None:
        """After a reconnect: a failed read-out of word 1, bit 1 means the ArC ONE lost its initialisation (a
        reset: stop). A lost write needs nothing written again: the only one it sends is the read update, which
        repeats the initialise's read settings."""
        if not self.idn:
            return
        try:
            self._resistance(self.CMD["read"].format(word=1, bit=1))
        except InstrumentFault:
            raise InstrumentFault(self.name, command, "instrument reset (a read failed after a reconnect: its "
                                  "initialisation is lost)") from None

    def shutdown(self) -> None:
        """Reset: nothing is applied between commands; the reset drops the read configuration."""
        self.write(self.CMD["reset"])
        self.unconfirmed.clear()

    def make_safe(self) -> list[str]:
        self.shutdown()
        return []
