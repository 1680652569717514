"""Emulated instruments: each parses its vendor's command set strictly and acts on the bench.

An unknown command queues -113 "Undefined header"; a value out of range or a
channel that does not exist queues -222 "Data out of range". Queries answer one
line; writes answer nothing (as on the real instruments).
"""

from __future__ import annotations

import re
from collections import deque

NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"


def scpi(header: str) -> str:
    """Regex for a SCPI header written in mixed case (SOURce:VOLTage): long or short form, any case.

    A trailing '#' on a node accepts an optional channel number (captured).
    """
    parts = []
    for node in header.strip(":").split(":"):
        suffix = node.endswith("#")
        node = node.rstrip("#")
        short = "".join(c for c in node if c.isupper() or c.isdigit() or c in "*?")
        alts = sorted({re.escape(node.upper()), re.escape(short.upper() or node.upper())}, key=len, reverse=True)
        parts.append(f"(?:{'|'.join(alts)})" + (r"(\d*)" if suffix else ""))
    return r"^:?" + ":".join(parts)


class Emulated:
    IDN = ""

    def __init__(self, name: str, bench, limits=None):
        self.name, self.bench, self.limits = name, bench, limits
        self.errors: deque[tuple[int, str]] = deque()

    def error(self, code: int, message: str) -> None:
        self.errors.append((code, message))

    def handle(self, line: str) -> str | None:
        raise NotImplementedError

    def outputs(self) -> dict:
        """What is on: {channel: level} for every output that is on or not at 0."""
        return {}


class EmulatedSCPI(Emulated):
    """Table-driven SCPI: (compiled header regex, argument regex or None, method)."""

    TABLE: list[tuple[str, str | None, str]] = []
    ERROR_REPLY = '{code},"{msg}"'

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._table = [(re.compile(scpi(h) + r"(\?)?(?:\s+(.*))?$", re.I), re.compile(a + "$", re.I) if a else None, m)
                       for h, a, m in self.TABLE]

    def handle(self, line: str) -> str | None:
        line = line.strip()
        if not line:
            return None
        if line.upper() == "*IDN?":
            return self.IDN
        if line.upper() == "*OPC?":
            return "1"
        if line.upper() in ("*RST", "*CLS"):
            if line.upper() == "*RST":
                self.reset()
            else:
                self.errors.clear()
            return None
        for head, arg_re, method in self._table:
            m = head.match(line)
            if not m:
                continue
            groups = [g for g in m.groups()[:-2]]
            query, arg = m.groups()[-2], (m.groups()[-1] or "").strip()
            if arg_re is not None and not query:
                am = arg_re.match(arg)
                if not am:
                    self.error(-222, "Data out of range")
                    return None
                return getattr(self, method)(*groups, *am.groups())
            return getattr(self, method)(*groups, query=bool(query), arg=arg)
        self.error(-113, "Undefined header")
        return None

    def sys_err(self, *_, query=False, arg=""):
        code, msg = self.errors.popleft() if self.errors else (0, "No error")
        return self.ERROR_REPLY.format(code=code, msg=msg)

    def reset(self):
        pass


class SMUState:
    def __init__(self):
        self.func, self.level_A, self.vlim, self.nplc, self.on, self.count = "VOLT", 0.0, 0.0, 1.0, False, 1
        self.buffer: list[float] = []


class EmulatedSMU(EmulatedSCPI):
    CHANNELS = ("1",)
    MAX_A = 1.0
    MAX_V = 200.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ch = {c: SMUState() for c in self.CHANNELS}

    def reset(self):
        for c in self.CHANNELS:
            self.ch[c] = SMUState()
            self.bench.set_current(self.name, c, 0.0)

    def s_sense(self, c, v):
        """The sense function: the emulated SMUs only ever measure volts, so setting it changes nothing."""
        return None

    def _chan(self, c: str):
        c = c or self.CHANNELS[0]
        if c not in self.ch:
            self.error(-222, "Data out of range")
            return None
        return c

    def _apply(self, c: str) -> None:
        st = self.ch[c]
        self.bench.set_current(self.name, c, st.level_A if (st.on and st.func == "CURR") else 0.0)

    def set_func(self, c, value):
        if (c := self._chan(c)) is None:
            return None
        self.ch[c].func = "CURR" if value.upper().startswith("CURR") else "VOLT"
        self._apply(c)

    def set_level(self, c, value):
        if (c := self._chan(c)) is None:
            return None
        v = float(value)
        if abs(v) > self.MAX_A:
            self.error(-222, "Data out of range")
            return None
        self.ch[c].level_A = v
        self._apply(c)

    def set_vlim(self, c, value):
        if (c := self._chan(c)) is None:
            return None
        v = float(value)
        if not 0 < v <= self.MAX_V:
            self.error(-222, "Data out of range")
            return None
        self.ch[c].vlim = v

    def set_nplc(self, c, value):
        if (c := self._chan(c)) is None:
            return None
        v = float(value)
        if not 0.001 <= v <= 25:
            self.error(-222, "Data out of range")
            return None
        self.ch[c].nplc = v

    def set_output(self, c, value):
        if (c := self._chan(c)) is None:
            return None
        self.ch[c].on = value.upper() in ("ON", "1")
        self._apply(c)

    def set_count(self, c, value):
        if (c := self._chan(c)) is None:
            return None
        n = int(value)
        if not 1 <= n <= 100000:
            self.error(-222, "Data out of range")
            return None
        self.ch[c].count = n

    def acquire(self, c):
        """Fill the channel's buffer with `count` readings (output must be on and measuring a node)."""
        st = self.ch[c]
        if not st.on:
            self.error(-200, "Execution error; output off")
            st.buffer = []
            return
        st.buffer = self.bench.read_voltages(self.name, c, st.count, st.nplc)

    def buffer_text(self, c, first: int, last: int) -> str | None:
        st = self.ch[c]
        if not (1 <= first <= last <= len(st.buffer)):
            self.error(-222, "Data out of range")
            return ""
        return ",".join(f"{v:.9e}" for v in st.buffer[first - 1:last])

    def outputs(self) -> dict:
        return {c: {"on": st.on, "func": st.func, "level_A": st.level_A} for c, st in self.ch.items()
                if st.on or st.level_A}


class Emulated2450(EmulatedSMU):
    IDN = "KEITHLEY INSTRUMENTS,MODEL 2450,04412345,1.7.12b"
    MAX_A, MAX_V = 1.05, 210.0
    # SOURce[1], SENSe[1], OUTPut[1]: the optional channel suffix is "1" or absent (_chan maps "" to "1").
    TABLE = [
        ("SOURce#:FUNCtion", r"(CURR|CURRENT|VOLT|VOLTAGE)", "set_func"),
        ("SOURce#:CURRent:VLIMit", NUM, "set_vlim"),
        ("SOURce#:CURRent", NUM, "set_level"),
        ("SENSe#:FUNCtion", r'"(VOLT|VOLTAGE|CURR|CURRENT)"', "s_sense"),
        ("SENSe#:VOLTage:NPLCycles", NUM, "set_nplc"),
        ("SENSe#:COUNt", r"(\d+)", "set_count"),
        ("OUTPut#", r"(ON|OFF|1|0)", "set_output"),
        ("TRACe:CLEar", r'"defbuffer1"', "s_clear"),
        ("TRACe:TRIGger", r'"defbuffer1"', "s_trigger"),
        ("TRACe:DATA", None, "q_data"),
        ("SYSTem:ERRor", None, "sys_err"),
    ]

    def s_clear(self): self.ch["1"].buffer = []
    def s_trigger(self): self.acquire("1")

    def q_data(self, query=False, arg=""):
        m = re.match(r'^(\d+)\s*,\s*(\d+)\s*,\s*"defbuffer1"\s*,\s*READ(?:ING)?$', arg, re.I)
        if not query or not m:
            self.error(-113, "Undefined header")
            return "" if query else None
        return self.buffer_text("1", int(m.group(1)), int(m.group(2)))


class EmulatedB2900(EmulatedSMU):
    IDN = "Keysight Technologies,B2902A,MY51140123,3.4.2011.5100"
    CHANNELS = ("1", "2")
    MAX_A, MAX_V = 3.0, 210.0
    ERROR_REPLY = '{code:+d},"{msg}"'
    TABLE = [
        ("SOURce#:FUNCtion:MODE", r"(CURR|CURRENT|VOLT|VOLTAGE)", "set_func"),
        ("SOURce#:CURRent", NUM, "set_level"),
        ("SENSe#:VOLTage:PROTection", NUM, "set_vlim"),
        ("SENSe#:FUNCtion", r'"(VOLT|VOLTAGE|CURR|CURRENT)"', "s_sense"),
        ("SENSe#:VOLTage:NPLCycles", NUM, "set_nplc"),
        ("TRIGger#:COUNt", r"(\d+)", "set_count"),
        ("OUTPut#", r"(ON|OFF|1|0)", "set_output"),
        ("INITiate", r"\(@(\d)\)", "s_init"),
        ("FETCh:ARRay:VOLTage", None, "q_fetch"),
        ("SYSTem:ERRor", None, "sys_err"),
    ]


    def s_init(self, c):
        if (c := self._chan(c)) is not None:
            self.acquire(c)

    def q_fetch(self, query=False, arg=""):
        m = re.match(r"^\(@(\d)\)$", arg)
        if not query or not m or self._chan(m.group(1)) is None:
            self.error(-113, "Undefined header")
            return "" if query else None
        st = self.ch[m.group(1)]
        return self.buffer_text(m.group(1), 1, len(st.buffer)) if st.buffer else ""


class EmulatedQDac2(EmulatedSCPI):
    IDN = "QDevil,QDAC-II,12,13-1.57"
    N_CHANNELS = 24
    TABLE = [
        ("SOURce#:RANGe", r"(LOW|HIGH)", "s_range"),
        ("SOURce#:FILTer", r"(DC|MED|HIGH)", "s_filter"),
        ("SOURce#:VOLTage:MODE", r"(FIX|FIXED)", "s_mode"),
        ("SOURce#:VOLTage:SLEW", NUM, "s_slew"),
        ("SOURce#:VOLTage", NUM, "s_volt"),
        ("SYSTem:ERRor", None, "sys_err"),
    ]
    ERROR_REPLY = '{code}, "{msg}"'

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reset()

    def reset(self):
        self.level = {c: 0.0 for c in range(1, self.N_CHANNELS + 1)}
        self.range = {c: "HIGH" for c in self.level}
        for c in self.level:
            self.bench.set_dac(self.name, str(c), 0.0)

    def _c(self, c):
        if not c or int(c) not in self.level:
            self.error(-222, "Data out of range")
            return None
        return int(c)

    def s_range(self, c, r):
        if (c := self._c(c)) is not None:
            self.range[c] = r.upper()

    def s_filter(self, c, f): self._c(c)
    def s_mode(self, c, m): self._c(c)

    def s_slew(self, c, v):
        if (c := self._c(c)) is not None and not float(v) > 0:
            self.error(-222, "Data out of range")

    def s_volt(self, c, v):
        if (c := self._c(c)) is None:
            return None
        v = float(v)
        if abs(v) > (2.0 if self.range[c] == "LOW" else 10.0):
            self.error(-222, "Data out of range")
            return None
        self.level[c] = v
        self.bench.set_dac(self.name, str(c), v)

    def outputs(self) -> dict:
        return {c: {"on": True, "level_V": v} for c, v in self.level.items() if v != 0.0}


class EmulatedTSP(Emulated):
    """One TSP (Lua) statement per line, matched against the statements the drivers use."""

    STATEMENTS: list[tuple[str, str]] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stmts = [(re.compile(p + "$"), m) for p, m in self.STATEMENTS]

    def handle(self, line: str) -> str | None:
        line = line.strip()
        if not line:
            return None
        if line == "*IDN?":
            return self.IDN
        if line == "*OPC?":
            return "1"
        for pat, method in self._stmts:
            m = pat.match(line)
            if m:
                return getattr(self, method)(*m.groups())
        self.error(-113, "Undefined header")  # TSP reports a syntax error; the code mirrors SCPI's
        return None

    def q_error(self):
        code, msg = self.errors.popleft() if self.errors else (0, "Queue Is Empty")
        return f"{code}\t{msg}\t0\t0"


class Emulated2600(EmulatedTSP, EmulatedSMU):
    IDN = "Keithley Instruments Inc., Model 2636B, 4123456, 4.0.4"
    CHANNELS = ("a", "b")
    MAX_A, MAX_V = 1.5, 200.0
    STATEMENTS = [
        (r"reset\(\)", "t_reset"),
        (r"smu([ab])\.source\.func = smu\1\.OUTPUT_(DCAMPS|DCVOLTS)", "t_func"),
        (r"display\.smu([ab])\.measure\.func = display\.MEASURE_DCVOLTS", "t_display"),
        (r"smu([ab])\.source\.limitv = " + NUM, "set_vlim"),
        (r"smu([ab])\.source\.leveli = " + NUM, "set_level"),
        (r"smu([ab])\.measure\.nplc = " + NUM, "set_nplc"),
        (r"smu([ab])\.source\.output = smu\1\.OUTPUT_(ON|OFF)", "set_output"),
        (r"smu([ab])\.measure\.count = (\d+)", "set_count"),
        (r"smu([ab])\.nvbuffer1\.clear\(\)", "t_clear"),
        (r"smu([ab])\.measure\.v\(smu\1\.nvbuffer1\)", "acquire"),
        (r"printbuffer\((\d+), (\d+), smu([ab])\.nvbuffer1\.readings\)", "t_print"),
        (r"print\(errorqueue\.next\(\)\)", "q_error"),
    ]

    def t_reset(self): self.reset()
    def t_func(self, c, f): return self.set_func(c, "CURR" if f == "DCAMPS" else "VOLT")
    def t_display(self, c): return None
    def t_clear(self, c): self.ch[c].buffer = []

    def t_print(self, first, last, c):
        return self.buffer_text(c, int(first), int(last)).replace(",", ", ")


class Emulated707B(EmulatedTSP):
    IDN = "Keithley Instruments Inc., Model 707B, 04123456, 1.7.0"
    STATEMENTS = [
        (r"reset\(\)", "t_reset"),
        (r'channel\.open\("allslots"\)', "t_open_all"),
        (r'channel\.exclusiveclose\("([1-6][A-H]\d\d)"\)', "t_excl"),
        (r'channel\.close\("([1-6][A-H]\d\d)"\)', "t_close"),
        (r'channel\.open\("([1-6][A-H]\d\d)"\)', "t_open"),
        (r'print\(channel\.getclose\("allslots"\)\)', "t_getclose"),
        (r"print\(errorqueue\.next\(\)\)", "q_error"),
    ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.closed: set[str] = set()

    def t_reset(self): self.t_open_all()

    def t_open_all(self):
        self.closed = set()
        self.bench.set_routes(self.name, self.closed)

    def t_excl(self, ch):
        if int(ch[2:]) > 12:
            self.error(-222, "Data out of range")
            return None
        self.closed = {ch}
        self.bench.set_routes(self.name, self.closed)

    def t_close(self, ch):
        if int(ch[2:]) > 12:
            self.error(-222, "Data out of range")
            return None
        self.closed.add(ch)
        self.bench.set_routes(self.name, self.closed)

    def t_open(self, ch):
        self.closed.discard(ch)
        self.bench.set_routes(self.name, self.closed)

    def t_getclose(self):
        return ";".join(sorted(self.closed)) or "nil"

    def outputs(self) -> dict:
        return {"closed": sorted(self.closed)} if self.closed else {}


class EmulatedXbarBoard(Emulated):
    """The serial programming board's line protocol (drivers/xbar_board.py documents it)."""

    IDN = "XBAR,EMU-1,0001,1.0"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
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


EMULATED = {
    "keithley2450": Emulated2450,
    "keithley2600": Emulated2600,
    "keysight_b2900": EmulatedB2900,
    "qdac2": EmulatedQDac2,
    "keithley707b": Emulated707B,
    "xbar_board": EmulatedXbarBoard,
}
