"""A TSP engine: a real Lua interpreter (lupa) per instrument, with the instrument's objects bound.

Each received line is a Lua chunk run in the instrument's Lua state (Keithley TSP is Lua 5.0 with the
instrument's objects as globals; see the Series 2600B Reference Manual 2600BS-901-01, section 5 "Instrument
programming" and section 6 "Error summary list"). What `print`/`printbuffer` write is the reply.
A Lua syntax error queues -285 ("TSP Syntax error"), a Lua runtime error -286 ("TSP Runtime error"),
a value the instrument refuses its own code (1101 Parameter too small, 1102 Parameter too big, ...).
The IEEE 488.2 common commands the manual lists (*IDN? *RST *CLS *OPC *OPC? *WAI *TRG *ESR? *STB? *TST?)
are recognised before Lua sees the line.

The instrument's objects are Python objects; Lua reads and writes their attributes (properties
validate), calls their methods with dot syntax (`smua.measure.v(smua.nvbuffer1)`) and indexes
sequences from 1 (`smua.nvbuffer1.readings[1]`).
"""

from __future__ import annotations

import struct
from collections import deque

import lupa.lua54 as lupa  # Lua 5.4 (TSP is Lua 5.0-based); lupa 2.8's Lua 5.5 binding passed the wrong object to __newindex handlers

from sim_backend.emulator.base import EmulatedInstrument
from sim_backend.emulator.scpi import ERROR_TEXT

SEVERITY_RECOVERABLE = 20


class TspError(Exception):
    """An error the instrument queues: its code and message (manual section 6, "Error summary list")."""

    def __init__(self, code: int, message: str):
        self.code, self.message = code, message
        super().__init__(f"{code}, {message}")


def too_big(name: str, value, hi) -> TspError:
    return TspError(1102, f"Parameter too big; {name} = {value} > {hi}")


def too_small(name: str, value, lo) -> TspError:
    return TspError(1101, f"Parameter too small; {name} = {value} < {lo}")


def in_range(name: str, value, lo: float, hi: float) -> float:
    """A number within [lo, hi]; TspError 1101/1102 otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TspError(-286, f"TSP Runtime error; {name} expects a number, got {value!r}") from None
    if v < lo:
        raise too_small(name, v, lo)
    if v > hi:
        raise too_big(name, v, hi)
    return v


class Bound:
    """Base for an object bound into Lua; `CONSTANTS` become read-only attributes (e.g. OUTPUT_ON)."""

    CONSTANTS: dict[str, float] = {}

    def __getattr__(self, name):
        try:
            return type(self).CONSTANTS[name]
        except KeyError:
            raise AttributeError(name) from None


class ErrorQueue(Bound):
    """`errorqueue`: next(), clear(), count (2600BS-901-01, section 7 "errorqueue.*")."""

    def __init__(self, size: int = 100):
        self.entries: deque[tuple[int, str, int, int]] = deque(maxlen=size)

    def push(self, code: int, message: str, severity: int = SEVERITY_RECOVERABLE) -> None:
        self.entries.append((code, message, severity, 1))

    def next(self):
        return self.entries.popleft() if self.entries else (0, "Queue Is Empty", 0, 0)

    def clear(self):
        self.entries.clear()

    @property
    def count(self):
        return len(self.entries)


class Format(Bound):
    """`format`: asciiprecision (1..16), data, byteorder (section 7 "format.*")."""

    CONSTANTS = {"ASCII": 1, "REAL32": 4, "REAL64": 12, "NORMAL": 0, "SWAPPED": 1, "BIGENDIAN": 0,
                 "LITTLEENDIAN": 1, "NETWORK": 0}

    def __init__(self):
        self._precision = 6
        self._data = 1
        self.byteorder = 1

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        if int(value) not in (1, 4, 12):
            raise TspError(1115, f"Parameter error; format.data = {value}")
        self._data = int(value)

    @property
    def asciiprecision(self):
        return self._precision

    @asciiprecision.setter
    def asciiprecision(self, value):
        self._precision = int(in_range("format.asciiprecision", value, 1, 16))

    def number(self, v) -> str:
        """A number as print() writes it: %.(p-1)e, e.g. 1.00000e-03 at the default precision 6."""
        return f"{float(v):.{self._precision - 1}e}"


class LocalNode(Bound):
    """`localnode`: model, serialno, version, linefreq, prompts, showerrors (section 7 "localnode.*")."""

    def __init__(self, model: str, serialno: str, version: str, linefreq: float):
        self.model, self.serialno, self.version, self.linefreq = model, serialno, version, linefreq
        self.description = f"Keithley Instruments Model {model}"
        self.prompts = 0
        self.prompts4882 = 1
        self.showerrors = 0
        self.license = "Keithley Instruments"


class Display(Bound):
    """`display`: the front panel; what it shows does not matter to the bench."""

    CONSTANTS = {"MEASURE_DCAMPS": 0, "MEASURE_DCVOLTS": 1, "MEASURE_OHMS": 2, "MEASURE_WATTS": 3,
                 "SMUA": 0, "SMUB": 1, "SMUA_SMUB": 2, "USER": 3, "ENABLE": 1, "DISABLE": 0}

    class Channel(Bound):
        def __init__(self):
            self.measure = Display.Func()

    class Func(Bound):
        def __init__(self):
            self.func = 1

    def __init__(self, channels=("a", "b")):
        for c in channels:
            setattr(self, f"smu{c}", Display.Channel())
        self.screen = 0
        self.locallockout = 0

    def clear(self): return None
    def settext(self, text): return None
    def setcursor(self, *a): return None


class TspInstrument(EmulatedInstrument):
    """A TSP instrument: `bind(globals)` puts its objects into the Lua state; the rest is shared."""

    MODEL = ""
    SERIAL = ""
    VERSION = ""

    def __init__(self, name, bench, limits=None):
        super().__init__(name, bench, limits)
        self.errorqueue = ErrorQueue()
        self.format = Format()
        self.esr = 0
        self._out: list[str] = []
        self._script: tuple | None = None
        self._new_lua()

    # ---- the Lua state ----
    def _new_lua(self) -> None:
        self.lua = lupa.LuaRuntime(unpack_returned_tuples=True, register_eval=False, register_builtins=False,
                                   attribute_handlers=(self._get, self._set))
        g = self.lua.globals()
        for unsafe in ("io", "os", "debug", "require", "dofile", "loadfile", "package", "python"):
            g[unsafe] = None
        g.print = self._print
        g.printbuffer = self._printbuffer
        g.printnumber = self._printnumber
        g.errorqueue = self.errorqueue
        g.format = self.format
        g.localnode = LocalNode(self.MODEL, self.SERIAL, self.VERSION, self.bench.line_frequency_hz)
        g.display = Display()
        g.waitcomplete = self._waitcomplete
        g.delay = self._delay
        g.reset = self.reset_all
        g.opc = self._opc
        self.bind(g)

    @staticmethod
    def _get(obj, name):
        if isinstance(name, (int, float)) and not isinstance(name, bool):
            try:
                return obj[int(name)]
            except (IndexError, KeyError):
                return None
        if isinstance(name, str) and not name.startswith("_"):
            return getattr(obj, name, None)
        return None

    @staticmethod
    def _set(obj, name, value):
        if not isinstance(name, str) or name.startswith("_") or not hasattr(obj, name):
            raise TspError(-286, f"TSP Runtime error; cannot set {name!r} of {type(obj).__name__}")
        setattr(obj, name, value)

    def bind(self, g) -> None:
        """Put the instrument's own objects (smua, channel, ...) into the Lua globals."""

    # ---- built-in functions ----
    def _text(self, v) -> str:
        if v is None:
            return "nil"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return self.format.number(v)
        if isinstance(v, (str, bytes)):
            return v.decode() if isinstance(v, bytes) else v
        return f"{type(v).__name__}: {id(v):#x}"

    def _print(self, *values):
        self._out.append("\t".join(self._text(v) for v in values))

    def _printnumber(self, *values):
        self._out.append(", ".join(self.format.number(v) for v in values))

    def _printbuffer(self, first, last, *buffers):
        """Readings first..last (1-based) of each buffer, interleaved (section 7 "printbuffer()"): ASCII
        comma separated, or with format.data REAL32/REAL64 the IEEE 488.2 "#0" block of binary floats."""
        first, last = int(first), int(last)
        rows = []
        for b in buffers:
            n = len(b)
            if not (1 <= first <= last <= n):
                raise TspError(1102 if last > n else 1101, f"Parameter too {'big' if last > n else 'small'}; "
                               f"printbuffer({first}, {last}) of {n} readings")
            rows.append([b[k] for k in range(first, last + 1)])
        values = [v for k in range(last - first + 1) for v in (r[k] for r in rows)]
        if self.format.data == Format.CONSTANTS["ASCII"]:
            self._out.append(", ".join(self.format.number(v) for v in values))
            return
        code = ("<" if self.format.byteorder else ">") + ("f" if self.format.data == 4 else "d")
        self._out.append(b"#0" + b"".join(struct.pack(code, float(v)) for v in values))

    def _waitcomplete(self, *group):
        self.clock.opc_requested = True   # the next reply waits for overlapped operations too (clock.py)

    def _opc(self):
        self.esr |= 1

    def _delay(self, seconds):
        self.clock.advance(in_range("delay", seconds, 0, 1e6))

    # ---- a received line ----
    def handle(self, line: str) -> str | bytes | None:
        line = line.strip()
        if self._script is not None:   # inside loadscript/loadandrunscript ... endscript (section 5)
            if line.lower() != "endscript":
                self._script[1].append(line)
                return None
            (name, run), body = self._script
            self._script = None
            return self.run_chunk("\n".join(body), name=name, run=run)
        if not line:
            return None
        words = line.split()
        if words[0].lower() in ("loadscript", "loadandrunscript") and len(words) <= 2:
            self._script = ((words[1] if len(words) > 1 else None, words[0].lower() == "loadandrunscript"), [])
            return None
        common = self.common(line)
        if common is not NotImplemented:
            return common
        return self.run_chunk(line)

    def run_chunk(self, chunk: str, name: str | None = None, run: bool = True) -> str | bytes | None:
        """Run (or, for a named loadscript, define as a global function) a Lua chunk; its printed output."""
        self._out = []
        try:
            if name is not None:
                self.lua.globals()[name] = self.lua.eval(f"function() {chunk}\nend")
                if run:
                    self.lua.globals()[name]()
            else:
                self.lua.execute(chunk)
        except TspError as err:
            self.errorqueue.push(err.code, err.message)
        except lupa.LuaSyntaxError as err:
            self.errorqueue.push(-285, "TSP Syntax error at line 1: " + _lua_message(err))
        except lupa.LuaError as err:
            self.errorqueue.push(-286, "TSP Runtime error at line 1: " + _lua_message(err))
        if not self._out:
            return None
        if any(isinstance(o, bytes) for o in self._out):
            return b"\n".join(o if isinstance(o, bytes) else o.encode() for o in self._out)
        return "\n".join(self._out)

    def common(self, line: str):
        """IEEE 488.2 common commands (2600BS-901-01, section 5 "Remote commands: common commands")."""
        key = line.upper()
        if key == "*IDN?":
            return f"Keithley Instruments Inc., Model {self.MODEL}, {self.SERIAL}, {self.VERSION}"
        if key == "*RST":
            self.reset_all()
            return None
        if key == "*CLS":
            self.errorqueue.clear()
            self.esr = 0
            return None
        if key in ("*OPC?",):
            self.clock.opc_requested = True
            return "1"
        if key in ("*OPC",):
            self.esr |= 1
            return None
        if key in ("*WAI", "*TRG"):
            return None
        if key == "*ESR?":
            value, self.esr = self.esr, 0
            return str(value)
        if key == "*STB?":
            return str(4 if self.errorqueue.count else 0)
        if key == "*TST?":
            return "0"
        return NotImplemented

    def queue_error(self, code: int) -> None:
        self.errorqueue.push(code, ERROR_TEXT.get(code, "Error"))

    def power_cycle(self) -> None:
        """A fresh Lua state (user variables and scripts are gone), an empty error queue, reset settings."""
        self.errorqueue.clear()
        self.esr = 0
        self._script = None
        self._new_lua()
        self.reset_all()

    def reset_all(self) -> None:
        """reset() and *RST: the data format and the instrument's own objects to their defaults."""
        self.format.asciiprecision = 6
        self.format.data = 1
        self.reset()

    def reset(self) -> None:
        """Every setting of the instrument's own objects to its default."""


def _lua_message(err: Exception) -> str:
    text = str(err).split("\nstack traceback:")[0]
    text = text.replace("error loading code: ", "")
    return text.split("]:1: ", 1)[-1]
