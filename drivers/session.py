"""VISA sessions: resource manager, terminations, timeouts, strict error checking and a command log.

Every write and query goes through `Instrument.write` / `Instrument.query`, which
log (time, instrument, command, reply) and count round trips. In strict mode a
configuration write is followed by a read of the error queue, and an error
there raises InstrumentError naming the instrument and the command.

Resources: a VISA resource string (e.g. `TCPIP0::192.168.0.5::5025::SOCKET`,
`GPIB0::24::INSTR`), a pyserial URL for serial instruments (`/dev/ttyUSB0`,
`socket://127.0.0.1:PORT`), or `emulator:NAME`, resolved through the registry
file written by `hil emulate`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pyvisa
from pyvisa import constants
from pyvisa.resources import MessageBasedResource

from drivers.emulator_registry import REGISTRY_ENV, RegistryError, read_registry, registry_path
from drivers.errors import InstrumentError, LimitError  # noqa: F401 - re-exported: drivers import them from here
from drivers.instrument_config import DriverSettings, InstrumentConfig
from drivers.registry import DRIVERS, ROLES, Role
from drivers.retry import (
    DROPPED,
    GARBAGE,
    REFUSED,
    InstrumentFault,
    TransientFault,
    UnconfirmedWrite,
    classify,
    is_garbage,
)


def resolve_resource(resource: str, registry: Path | None = None) -> str:
    """Turn `emulator:NAME` into the live address `hil emulate` registered; other strings pass through.

    registry: the registry file (default: $HIL_EMULATOR_REGISTRY, else .hil-emulator.json here)."""
    if not resource.startswith("emulator:"):
        return resource
    name = resource.split(":", 1)[1]
    path = registry_path(registry)
    if not path.is_file():
        raise InstrumentError(f"resource {resource}: no emulator registry at {path.resolve()}; start `hil emulate --lab "
                              f"LAB.yaml` in this folder first, or point {REGISTRY_ENV} (hil safe: --registry) "
                              "at the file it wrote")
    try:
        reg = read_registry(path)
    except (OSError, RegistryError):
        raise InstrumentError(f"resource {resource}: {path} is not an emulator registry; start `hil emulate` again") from None
    if reg.owner_running() is False:
        raise InstrumentError(f"resource {resource}: the emulator that wrote {path} (pid {reg.pid}) is no longer running; "
                              "start `hil emulate --lab LAB.yaml` again")
    if name not in reg.resources:
        raise InstrumentError(f"resource {resource}: the running emulator ({path}) has no instrument {name!r}")
    return reg.resources[name]


class CommandLog:
    """Appends one JSON line per command: {"t": s since open, "instrument", "command", "reply"}."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else None
        self._f = open(self.path, "a", buffering=1) if self.path else None
        self._t0 = time.perf_counter()
        self._lock = threading.Lock()
        self.entries: list[tuple[str, str, str | None]] = []  # kept in memory too (transcripts, tests)
        self._pending: list[dict] = []  # rows logged before a file is attached
        self.faults: list[dict] = []  # failed exchanges (timeouts, garbage, dropped connections), retries, read-backs

    def record(self, instrument: str, command: str, reply: str | None, **fault: Any) -> None:
        """One exchange; `fault` (kind, action) marks a failed one (see drivers/retry.py), kept in `faults` too."""
        with self._lock:
            row = {"t": round(time.perf_counter() - self._t0, 6), "instrument": instrument, "command": command,
                   "reply": reply}
            if fault:
                row.update(fault)
                self.faults.append(row)
            else:
                self.entries.append((instrument, command, reply))
            if self._f:
                self._f.write(json.dumps(row) + "\n")
            else:
                self._pending.append(row)

    def attach(self, path: Path) -> None:
        """Start writing to a file (e.g. once the run folder exists), beginning with what was logged so far."""
        with self._lock:
            self.path = Path(path)
            self._f = open(self.path, "a", buffering=1)
            for row in self._pending:
                self._f.write(json.dumps(row) + "\n")
            self._pending = []

    def transcript(self, instrument: str) -> list[tuple[str, str | None]]:
        return [(c, r) for i, c, r in self.entries if i == instrument]

    def close(self) -> None:
        if self._f:
            self._f.close()
            self._f = None


def set_nodelay(res: Any) -> bool:
    """TCP_NODELAY on a SOCKET resource: VI_ATTR_TCPIP_NODELAY where the VISA library supports it, else the
    socket itself (pyvisa-py 0.8 does not accept the attribute on SOCKET sessions)."""
    try:
        res.set_visa_attribute(constants.ResourceAttribute.tcpip_nodelay, constants.VisaBoolean.true)
        return True
    except Exception:  # noqa: BLE001
        pass
    sock = getattr(getattr(res.visalib, "sessions", {}).get(res.session), "interface", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return True
    return False


class VisaSession:
    """One pyvisa ResourceManager for the lab (`@py` = pyvisa-py, `@ivi` = NI-VISA or another IVI library, `@sim`)."""

    def __init__(self, library: str = "@py", log: CommandLog | None = None, registry: Path | None = None):
        self.library = library
        try:
            self.rm = pyvisa.ResourceManager(library)
        except (OSError, ValueError) as err:
            raise InstrumentError(f"VISA library {library!r} could not be loaded: {err}") from None
        self.log = log or CommandLog()
        self.registry = registry

    def open(self, resource: str, *, timeout_ms: int = 5000, read_termination: str = "\n",
             write_termination: str = "\n") -> MessageBasedResource:
        address = resolve_resource(resource, self.registry)
        try:
            res = self.rm.open_resource(address)
            if not isinstance(res, MessageBasedResource):
                res.close()
                raise TypeError(f"{type(res).__name__} takes no commands (not a message-based session)")
        except Exception as err:  # pyvisa raises several types here
            raise InstrumentError(f"could not open {resource} ({address}): {err}") from None
        res.timeout = timeout_ms
        if address.upper().endswith("::SOCKET"):
            # Small command/reply exchanges: without TCP_NODELAY, Nagle's algorithm and delayed ACKs add ~40 ms each.
            set_nodelay(res)
        res.read_termination = read_termination
        res.write_termination = write_termination
        return res

    def close(self) -> None:
        try:
            self.rm.close()
        finally:
            self.log.close()


class Instrument:
    """Base for one instrument: logged writes and queries, identity check, strict error queue."""

    #: substring that *IDN? must contain (per driver)
    IDN_MATCH: str = ""
    #: the command strings, in one place per driver (each needs at least "reset")
    CMD: dict[str, str] = {}
    #: the query that pops one entry of the error queue, and how a "no error" reply starts
    ERROR_QUERY = ":SYSTem:ERRor?"
    NO_ERROR_PREFIXES: tuple[str, ...] = ("0,", "+0,")
    #: the lab config's `kind:` for this driver; declaring it registers the class (drivers/registry.py)
    KIND: ClassVar[str | None] = None
    #: what it does on the bench: "dac", "smu", "switch" or "board"
    ROLE: ClassVar[Role | None] = None
    #: hardware range: the largest |V| it can source (a board: pulse), and |A| (None: not a source of it)
    MAX_V: ClassVar[float | None] = None
    MAX_A: ClassVar[float | None] = None
    #: a programmer's word and bit line numbers (first, last); None: any row and column from 0 (the lab config
    #: refuses a device map outside them)
    LINE_RANGE: ClassVar[tuple[int, int] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("KIND")
        if kind is not None:
            if cls.ROLE not in ROLES:
                raise TypeError(f"{cls.__qualname__}: KIND {kind!r} needs a ROLE, one of {', '.join(ROLES)}")
            DRIVERS.register(kind, cls)

    # ---- from its slice of the lab config -----------------------------------------
    @classmethod
    def open_transport(cls, cfg: InstrumentConfig, session: VisaSession) -> Any:
        """The open connection to the instrument (VISA here; a serial driver opens its port)."""
        return session.open(cfg.resource, timeout_ms=cfg.timeout_ms)

    @classmethod
    def settings(cls, cfg: DriverSettings) -> dict[str, Any]:
        """The driver's keyword arguments from its slice of the lab config (its safe limits)."""
        return {}

    @classmethod
    def from_settings(cls, cfg: DriverSettings, session: VisaSession) -> Instrument:
        """The driver of one instrument (`LabConfig.driver_settings(name)`), its connection open (not yet
        identified or reset), with `reopen` set: a fresh connection to the same instrument, through which the
        fault policy reconnects (drivers/retry.py)."""
        transport = cls.open_transport(cfg.instrument, session)
        try:
            drv = cls(cfg.name, transport, session.log, strict=cfg.strict, **cls.settings(cfg))
        except BaseException:
            transport.close()  # a driver that refuses its settings leaves no connection open
            raise
        drv.reopen = lambda: cls.open_transport(cfg.instrument, session)
        return drv

    def __init__(self, name: str, resource: Any, log: CommandLog, *, strict: bool = True):
        self.name = name
        self.resource = resource
        self.log = log
        self.strict = strict
        self.queries = 0  # round trips
        self.idn = ""
        #: opens a fresh session to the same instrument (set by `from_settings`); None: no retries
        self.reopen: Callable[[], Any] | None = None
        self.retries = 0          # recoveries: queries retried, and reconnects after a failed write (drivers/retry.py)
        self.unconfirmed: list[str] = []  # writes sent since the last reply (lost if the connection dropped)
        self.writes_unchecked = 0  # writes since the error queue was last read
        self.last_write = ""
        self._recovering = False
        self._stale = False  # the session may hold a late reply (see _fresh_session_if_stale)

    # ---- transport -------------------------------------------------------------
    def write(self, command: str) -> None:
        """Send a command that has no reply. A write that fails (socket gone) reconnects and reads the state back."""
        self._fresh_session_if_stale()
        self.unconfirmed.append(command)
        self.writes_unchecked += 1
        self.last_write = command
        try:
            self.resource.write(command)
        except Exception as err:  # noqa: BLE001 - pyvisa and sockets raise many kinds for one cause
            self.log.record(self.name, command, None, fault=DROPPED, detail=str(err)[:120], action="reconnect")
            if self.reopen is None or self._recovering:
                raise InstrumentFault(self.name, command, f"{DROPPED} ({err})") from None
            self.retries += 1
            self._recover(command, DROPPED)  # reconcile() writes again what reads back wrong
            return
        self.log.record(self.name, command, None)

    def _exchange(self, command: str) -> str:
        try:
            reply = self.resource.query(command).strip()
        except TransientFault:
            raise  # a transport that can tell garbage itself (a binary reply) says so
        except Exception as err:  # noqa: BLE001
            raise TransientFault(classify(err), str(err)[:120]) from None
        if is_garbage(reply):
            raise TransientFault(GARBAGE, repr(reply[:40]))
        return reply

    def query(self, command: str, *, idempotent: bool = True) -> str:
        """A command with a reply. An idempotent one that fails transiently is retried once after clearing the
        interface (logged, counted in `retries`); a non-idempotent one raises UnconfirmedWrite instead; a second
        failure raises InstrumentFault."""
        self._fresh_session_if_stale()
        try:
            reply = self._exchange(command)
        except TransientFault as fault:
            if self._recovering or self.reopen is None:
                self.log.record(self.name, command, None, fault=fault.kind, action="stop")
                self._stale = True
                raise InstrumentFault(self.name, command, fault.kind) from None
            self.log.record(self.name, command, None, fault=fault.kind,
                            action="retry" if idempotent else "read back")
            self._recover(command, fault.kind)
            if not idempotent:
                raise UnconfirmedWrite(self.name, command, fault.kind) from None
            self.retries += 1
            try:
                reply = self._exchange(command)
            except TransientFault as again:
                self.log.record(self.name, command, None, fault=again.kind, action="stop")
                self._stale = True
                raise InstrumentFault(self.name, command, f"{again.kind}, again after a retry") from None
        self.queries += 1
        self.unconfirmed.clear()
        self.log.record(self.name, command, reply)
        return reply

    def _fresh_session_if_stale(self) -> None:
        """After a fault that stopped the run, the next command (the shutdown's) goes out on a fresh session: a late
        reply still on its way must not be read as the answer to it."""
        if self._stale and self.reopen is not None and not self._recovering:
            self._stale = False
            try:
                self.resource.close()
            except Exception:  # noqa: BLE001
                pass
            self.resource = self.reopen()

    def _recover(self, command: str, kind: str) -> None:
        """Clear the interface by reopening the session, then read the state back (`reconcile`)."""
        self._recovering = True
        try:
            try:
                self.resource.close()
            except Exception:  # noqa: BLE001 - a dead session
                pass
            try:
                assert self.reopen is not None  # the callers recover only with a way to reconnect
                self.resource = self.reopen()
            except Exception as err:  # noqa: BLE001
                raise InstrumentFault(self.name, command, f"{kind}; reconnecting failed ({err})") from None
            lost, self.unconfirmed = self.unconfirmed, []
            self.reconcile(command, lost)
        finally:
            self._recovering = False

    def reconcile(self, command: str, lost: list[str]) -> None:
        """After a reconnect: read back what `lost` (writes sent since the last reply) set, write again only what
        reads back wrong; raise InstrumentFault on settings back at their power-on defaults (a reset).
        The base class cannot read anything back: lost writes stop the run."""
        if lost:
            raise InstrumentFault(self.name, command, f"connection lost with {len(lost)} unconfirmed write(s) "
                                  f"({lost[0]!r}...) that this instrument cannot read back")

    def rewrite_after_readback(self, command: str) -> None:
        """Write a setting again that read back wrong after a reconnect (logged as such)."""
        self.log.record(self.name, command, None, fault="setting lost", action="rewritten after read-back")
        self.write(command)

    def configure(self, command: str) -> None:
        """A configuration write; in strict mode the error queue is read right after."""
        self.write(command)
        if self.strict:
            self.check_errors(command)

    def check_errors(self, after: str = "") -> None:
        """Read one entry of the error queue; an error there stops the run (InstrumentFault naming the last write)."""
        reply = self.query(self.ERROR_QUERY)
        self.writes_unchecked = 0
        if not reply.startswith(self.NO_ERROR_PREFIXES):
            self.log.record(self.name, after or self.last_write, reply, fault="SCPI error", action="stop")
            raise InstrumentFault(self.name, after or self.last_write, f"SCPI error {reply}")

    # ---- common ------------------------------------------------------------------
    def identify(self) -> str:
        try:
            self.idn = self.query("*IDN?")
        except InstrumentFault as fault:
            if REFUSED not in str(fault):
                raise
            where = getattr(self.resource, "resource_name", "its address")
            raise InstrumentError(f"{self.name}: cannot connect to {where}: connection refused (is it on, and at "
                                  "this address? an emulated lab: is hil emulate running?)") from None
        if self.IDN_MATCH.lower() not in self.idn.lower():
            raise InstrumentError(f"{self.name}: *IDN? answered {self.idn!r}, expected a {self.IDN_MATCH}")
        return self.idn

    def connect(self) -> None:
        """Check the identity, reset, and (strict) confirm the reset left no error."""
        self.identify()
        self.write(self.CMD["reset"])
        if self.strict:
            self.check_errors("reset")

    def sync(self) -> None:
        """*OPC?: returns once the instrument has carried out every command sent before it (one round trip)."""
        reply = self.query("*OPC?")
        if reply.strip() not in ("1", "+1"):
            raise InstrumentError(f"{self.name}: *OPC? answered {reply!r}")

    def shutdown(self) -> None:
        """Ramp outputs to 0 V and switch them off (each driver knows how)."""

    def make_safe(self) -> list[str]:
        """After a crash, with no reset: read what is on, ramp it to 0, switch it off; one line per finding.

        The driver knows nothing of the instrument's state here (another process set it), so it asks.
        """
        self.shutdown()
        return []

    def close(self) -> None:
        try:
            self.resource.close()
        except Exception:  # noqa: BLE001 - closing a dead session must not mask the real error
            pass


class TspErrorQueue:
    """Keithley TSP instruments (2600B, 707B/708B): errorqueue.next() pops one error; code 0 first means none."""

    ERROR_QUERY = "print(errorqueue.next())"
    NO_ERROR_PREFIXES: tuple[str, ...] = ("0\t", "0.00000e+00\t")


def check_limit(name: str, value: float, limit: float, unit: str) -> float:
    """Raise LimitError unless |value| <= limit; never clamps."""
    if not (value == value) or abs(value) > limit:  # NaN fails too
        raise LimitError(f"{name}: {value:.6g} {unit} exceeds the safe limit of +-{limit:.6g} {unit}")
    return value


def ramp_steps(start: float, stop: float = 0.0, steps: int = 5) -> list[float]:
    """Intermediate levels for a gentle ramp (the last one is `stop`)."""
    if start == stop:
        return [stop]
    return [start + (stop - start) * k / steps for k in range(1, steps)] + [stop]


def parse_state(reply: str) -> bool:
    """An on/off reply (1, 0, ON, OFF, 1.00000e+00) as a bool."""
    text = reply.strip().upper()
    if text in ("ON", "OFF"):
        return text == "ON"
    try:
        return float(text) != 0
    except ValueError:
        raise InstrumentError(f"expected an on/off state, got {reply!r}") from None


def parse_floats(reply: str, sep: str = ",") -> list[float]:
    try:
        return [float(v) for v in reply.replace("\t", sep).split(sep) if v.strip()]
    except ValueError:
        raise InstrumentError(f"expected numbers, got {reply[:80]!r}") from None
