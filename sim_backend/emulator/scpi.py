"""A shared SCPI engine (IEEE 488.2 + SCPI-1999) for the emulated SCPI instruments.

An instrument declares its command tree as data: `Param` entries (a settable value with a query form) and
`Command` entries (an action, a query, or both). Headers are written in the manuals' mixed case
(`SOURce#:CURRent[:LEVel][:IMMediate][:AMPLitude]`): the upper-case letters are the short form, `[...]` an
optional node, `#` an optional numeric suffix (the channel). The engine supplies what every SCPI instrument
shares: long/short case-insensitive headers, compound messages (`;` relative to the last node, `;:` from
the root), quoted strings with ' or ", MIN/MAX/DEF, the common commands (*RST *CLS *OPC *OPC? *WAI *STB?
*ESR? *ESE *SRE *TST? *IDN?) and the error queue (:SYSTem:ERRor[:NEXT]?, :SYSTem:ERRor:ALL?,
:SYSTem:ERRor:COUNt?) with the SCPI-1999 codes (volume 2, chapter 21 "Error/event queue"):

    -100 command error, -101 invalid character, -102 syntax error, -104 data type error,
    -108 parameter not allowed, -109 missing parameter, -113 undefined header,
    -114 header suffix out of range, -200 execution error, -221 settings conflict,
    -222 data out of range, -224 illegal parameter value, -350 queue overflow,
    -410 query interrupted, -420 query unterminated.

-410 and -420 are in the table but never generated: over a raw TCP socket the instrument never sees a
read request, so it cannot tell an unread reply (-410) or a read with nothing to answer (-420); a query
that fails queues its own error and sends nothing, and the client times out, as on a real SOCKET session.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim_backend.emulator.clock import EmulatedClock

ERROR_TEXT = {
    -100: "Command error", -101: "Invalid character", -102: "Syntax error", -104: "Data type error",
    -108: "Parameter not allowed", -109: "Missing parameter", -113: "Undefined header",
    -114: "Header suffix out of range", -200: "Execution error", -221: "Settings conflict",
    -222: "Data out of range", -224: "Illegal parameter value", -350: "Queue overflow",
    -410: "Query INTERRUPTED", -420: "Query UNTERMINATED",
}


class ScpiError(Exception):
    """A command the instrument refuses: `code` from ERROR_TEXT (or the instrument's own list)."""

    def __init__(self, code: int, detail: str = "", text: str | None = None):
        self.code = code
        self.text = text or ERROR_TEXT.get(code, "Error")   # what the error queue reports
        self.detail = detail                                 # what was wrong, for the log
        super().__init__(f"{code}, {self.text}" + (f" ({detail})" if detail else ""))


# ---- value types: parse program data, format response data ----------------------------------------------

class Num:
    """A real number in [lo, hi] (MIN/MAX/DEF resolve to lo/hi/default); `fmt` formats the query reply."""

    def __init__(self, lo: float, hi: float, fmt: str | None = None, integer: bool = False):
        self.lo, self.hi, self.fmt, self.integer = lo, hi, fmt, integer

    def parse(self, arg: str, default: Any) -> float:
        word = arg.upper()
        if word in ("MIN", "MINIMUM"):
            return self.lo
        if word in ("MAX", "MAXIMUM"):
            return self.hi
        if word in ("DEF", "DEFAULT"):
            return default
        value = parse_number(arg)
        if self.integer:
            value = int(round(value))
        if not self.lo <= value <= self.hi:
            raise ScpiError(-222, f"{arg} outside [{self.lo:g}, {self.hi:g}]")
        return value

    def format(self, value, number_format: str) -> str:
        if self.integer:
            return str(int(value))
        return format(float(value), self.fmt or number_format)


class Int(Num):
    def __init__(self, lo: int, hi: int):
        super().__init__(lo, hi, integer=True)


class Bool:
    """ON|OFF|1|0; queries answer 1 or 0 (SCPI-1999 vol. 1, 7.3 "Boolean program data")."""

    def parse(self, arg: str, default: Any) -> bool:
        word = arg.upper()
        if word in ("ON", "1"):
            return True
        if word in ("OFF", "0"):
            return False
        try:
            return round(parse_number(arg)) != 0
        except ScpiError:
            raise ScpiError(-224, f"{arg} is not ON, OFF, 1 or 0") from None

    def format(self, value, number_format: str) -> str:
        return "1" if value else "0"


class Choice:
    """Character data from a fixed set written in mixed case (`CURRent`); queries answer the short form,
    or `replies[value]` where the manual shows another (e.g. the 2450's quoted "VOLT:DC")."""

    def __init__(self, *words: str, quoted: bool = False, replies: dict[str, str] | None = None):
        self.words = words
        self.quoted = quoted
        self.replies = replies or {}
        # a word may have optional nodes ("VOLTage[:DC]"); its value is the short form of its first node
        self._re = [(header_regex(w), short_form(re.split(r"[\[:]", w)[0])) for w in words]

    def parse(self, arg: str, default: Any) -> str:
        text = arg
        if self.quoted:
            if len(arg) < 2 or arg[0] not in "'\"" or arg[-1] != arg[0]:
                raise ScpiError(-104, f"{arg}: a quoted string is expected")
            text = arg[1:-1]
        for pattern, short in self._re:
            if pattern.match(":" + text.strip()):
                return short
        raise ScpiError(-224, f"{arg} is not one of {', '.join(self.words)}")

    def format(self, value, number_format: str) -> str:
        reply = self.replies.get(value, value)
        return f'"{reply}"' if self.quoted else reply


class Word:
    """Character data matching `pattern` (e.g. a trigger name "int3"); the query answers it in lower case."""

    def __init__(self, pattern: str):
        self.re = re.compile(pattern + "$", re.I)

    def parse(self, arg: str, default: Any) -> str:
        if not self.re.match(arg):
            raise ScpiError(-224, arg)
        return arg.lower()

    def format(self, value, number_format: str) -> str:
        return value


class Text:
    """A quoted string (either quote); the query answers it in double quotes."""

    def parse(self, arg: str, default: Any) -> str:
        if len(arg) < 2 or arg[0] not in "'\"" or arg[-1] != arg[0]:
            raise ScpiError(-104, f"{arg}: a quoted string is expected")
        return arg[1:-1].replace(arg[0] * 2, arg[0])

    def format(self, value, number_format: str) -> str:
        return '"' + str(value).replace('"', '""') + '"'


def parse_number(arg: str) -> float:
    """Decimal numeric program data (SCPI-1999 vol. 1, 7.2), with an optional unit suffix the engine ignores."""
    m = re.fullmatch(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE]\s*[-+]?\d+)?)\s*([A-Za-z]*)\s*", arg)
    if not m:
        raise ScpiError(-104, f"{arg!r} is not a number")
    value = float(m.group(1).replace(" ", ""))
    unit = m.group(2).upper()
    prefixes = {"": 1.0, "M": 1e-3, "U": 1e-6, "N": 1e-9, "P": 1e-12, "K": 1e3}
    if unit and unit not in ("V", "A", "S", "HZ", "OHM", "PLC", "MV", "MA", "UA", "UV", "NA", "PA", "KOHM", "MS",
                             "US", "NS"):
        raise ScpiError(-104, f"{arg!r}: unknown unit {m.group(2)}")
    if len(unit) == 2 and unit not in ("HZ",) and unit[0] in prefixes:
        value *= prefixes[unit[0]]
    return value


# ---- the command tree as data ------------------------------------------------------------------------------

def short_form(word: str) -> str:
    return "".join(c for c in word if c.isupper() or c.isdigit() or c in "*?") or word.upper()


def mnemonic(word: str) -> str:
    """Regex for one mnemonic: its long or its short form, nothing in between (SCPI-1999 vol. 1, 6.2.1)."""
    alts = sorted({re.escape(word.upper()), re.escape(short_form(word))}, key=len, reverse=True)
    return f"(?:{'|'.join(alts)})"


def header_regex(header: str) -> re.Pattern:
    """Compile `[:]SOURce#:CURRent[:LEVel]`; each `#` captures an optional numeric suffix."""
    out = []
    for optional, node in re.findall(r"(\[?):?([A-Za-z*#?0-9]+)\]?", header):
        suffix = node.endswith("#")
        node = node.rstrip("#")
        piece = ":" + mnemonic(node) + (r"(\d*)" if suffix else "")
        out.append(f"(?:{piece})?" if optional else piece)
    return re.compile("^" + "".join(out) + "$", re.I)


@dataclass
class Param:
    """A setting: `header value` sets it, `header?` (optionally `? MIN|MAX|DEF`) queries it.

    `attr` names the attribute on the channel's state object (`state(suffix)`); `default` is its *RST value.
    """

    header: str
    kind: Any
    attr: str
    default: Any
    set_only: bool = False


@dataclass
class Command:
    """An action and/or query: calls `method(suffixes, args, query)` on the instrument."""

    header: str
    method: str
    query: bool | None = None   # True: query only, False: no query form, None: both


class State:
    """The settings of one channel (or of the instrument), as attributes (named by each instrument's TABLE)."""

    def __getattr__(self, name: str) -> Any:
        # Only reached for a setting not set yet: its attributes come from the TABLE at run time (typed as Any).
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)


# ---- splitting a program message ---------------------------------------------------------------------------

def split_units(message: str) -> list[str]:
    """Split a program message at ';' outside quotes."""
    units, cur, quote = [], [], ""
    for ch in message:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            cur.append(ch)
        elif ch == ";":
            units.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if quote:
        raise ScpiError(-102, "unterminated string")
    units.append("".join(cur))
    return units


def split_args(text: str) -> list[str]:
    """Program data separated by ',' outside quotes and parentheses (channel lists stay whole)."""
    if not text.strip():
        return []
    args, cur, quote, depth = [], [], "", 0
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    args.append("".join(cur).strip())
    if any(a == "" for a in args):
        raise ScpiError(-102, "empty parameter")
    return args


def channel_list(arg: str) -> list[int]:
    """`(@1)`, `(@1,2)`, `(@1:3)` -> [1, 2, 3] (SCPI-1999 vol. 1, 8.3.2 channel lists)."""
    m = re.fullmatch(r"\(@\s*([\d,:\s]+)\)", arg.strip())
    if not m:
        raise ScpiError(-104, f"{arg} is not a channel list (@n)")
    out = []
    for part in m.group(1).split(","):
        a, _, b = part.strip().partition(":")
        out += list(range(int(a), int(b or a) + 1))
    return out


# ---- the engine --------------------------------------------------------------------------------------------

class ScpiInstrument:
    """Parse program messages against TABLE; keep the error queue and the IEEE 488.2 status registers.

    Subclasses set IDN, TABLE, SUFFIXES (the valid numeric suffixes; the first is the default),
    ERROR_FORMAT and NUMBER_FORMAT (how the manual shows errors and numbers), and implement the methods
    their Commands name. `state(suffix)` returns the object Params live on; `after_set(param, suffix)`
    lets the physics follow a change.
    """

    IDN = ""
    TABLE: list = []
    SUFFIXES: tuple[int, ...] = (1,)
    ERROR_FORMAT = '{code},"{text}"'
    NUMBER_FORMAT = ".6E"
    ERROR_QUEUE_SIZE = 10
    #: the instrument's clock (the EmulatedInstrument it is mixed into provides it)
    clock: EmulatedClock

    _compiled: dict[type, list] = {}

    def __init__(self):
        self.errors: deque[tuple[int, str]] = deque()
        self.esr = 0     # standard event status register (IEEE 488.2, 11.5.1)
        self.ese = 0
        self.sre = 0
        self.states = {s: State() for s in self.SUFFIXES}
        self.reset_settings()

    # ---- table ----
    @classmethod
    def table(cls) -> list:
        if cls not in ScpiInstrument._compiled:
            entries = []
            for e in cls.TABLE:
                entries.append((header_regex(e.header), e))
            ScpiInstrument._compiled[cls] = entries
        return ScpiInstrument._compiled[cls]

    def reset_settings(self) -> None:
        for e in self.TABLE:
            if isinstance(e, Param):
                for s in self.SUFFIXES:
                    setattr(self.state(s), e.attr, e.default)

    def state(self, suffix: int) -> State:
        return self.states[suffix]

    def after_set(self, param: Param, suffix: int) -> None:
        """Hook: a setting changed."""

    # ---- errors and status ----
    def error(self, code: int, text: str | None = None) -> None:
        """Queue an error and set its event bit (IEEE 488.2 11.5.1.1: bits 2..5)."""
        text = text or ERROR_TEXT.get(code, "Error")
        if len(self.errors) >= self.ERROR_QUEUE_SIZE:
            self.errors[-1] = (-350, ERROR_TEXT[-350])
        else:
            self.errors.append((code, text))
        if -199 <= code <= -100:
            self.esr |= 1 << 5   # command error
        elif -299 <= code <= -200:
            self.esr |= 1 << 4   # execution error
        elif -399 <= code <= -300 or code > 0:
            self.esr |= 1 << 3   # device-dependent error
        elif -499 <= code <= -400:
            self.esr |= 1 << 2   # query error

    def format_error(self, code: int, text: str) -> str:
        return self.ERROR_FORMAT.format(code=code, text=text)

    def pop_error(self) -> str:
        code, text = self.errors.popleft() if self.errors else (0, "No error")
        return self.format_error(code, text)

    def stb(self) -> int:
        """Status byte: bit 2 error queue not empty, bit 5 ESB summary, bit 6 MSS (IEEE 488.2 11.2)."""
        value = (4 if self.errors else 0) | (32 if self.esr & self.ese else 0) | self.device_status_bits()
        return value | (64 if value & self.sre & ~64 else 0)

    def device_status_bits(self) -> int:
        """Hook: the instrument's summary bits (e.g. the 2450's questionable bit 3 at compliance)."""
        return 0

    # ---- message handling ----
    def handle(self, message: str) -> str | None:
        """One program message (one line); returns the response message, or None when nothing was queried."""
        message = message.strip()
        if not message:
            return None
        try:
            units = split_units(message)
        except ScpiError as err:
            self.error(err.code, err.text)
            return None
        replies: list[str] = []
        path: list[str] = []
        for unit in units:
            unit = unit.strip()
            if not unit:
                if len(units) > 1 and unit is not units[-1]:
                    self.error(-102, ERROR_TEXT[-102] + "; empty command")
                continue
            try:
                reply, path = self.execute(unit, path)
            except ScpiError as err:
                self.error(err.code, err.text)
                break   # the rest of the message is discarded (IEEE 488.2, 6.1.6.1.2)
            if reply is not None:
                replies.append(reply)
        return ";".join(replies) if replies else None

    def execute(self, unit: str, path: list[str]) -> tuple[str | None, list[str]]:
        m = re.match(r"^(:?[A-Za-z*][A-Za-z0-9_:*]*\??)(?:\s+(.*))?$", unit, re.S)
        if not m:
            raise ScpiError(-102 if not re.match(r"^[:*A-Za-z]", unit) else -101, unit[:40])
        head, argtext = m.group(1), (m.group(2) or "").strip()
        query = head.endswith("?")
        head = head.rstrip("?")
        if head.startswith("*"):
            return self.common(head.upper(), split_args(argtext), query), path
        nodes = head.lstrip(":").split(":")
        if not head.startswith(":") and path:
            nodes = path + nodes
        full = ":" + ":".join(nodes)
        for regex, entry in self.table():  # noqa: B007 - the matching entry is used after the loop
            m = regex.match(full)
            if m:
                break
        else:
            raise ScpiError(-113, head)
        suffixes = [int(g) if g else None for g in m.groups()]
        new_path = nodes[:-1]
        args = split_args(argtext)
        if isinstance(entry, Param):
            return self.run_param(entry, suffixes, args, query), new_path
        if entry.query is True and not query:
            raise ScpiError(-113, f"{head} is a query only")
        if entry.query is False and query:
            raise ScpiError(-113, f"{head} has no query form")
        return getattr(self, entry.method)(suffixes, args, query), new_path

    def suffix(self, suffixes: list) -> int:
        """The channel a header names: its first numeric suffix, or the default channel."""
        s = next((x for x in suffixes if x is not None), None)
        if s is None:
            return self.SUFFIXES[0]
        if s not in self.SUFFIXES:
            raise ScpiError(-114, f"channel {s}")
        return s

    def run_param(self, p: Param, suffixes: list, args: list[str], query: bool) -> str | None:
        s = self.suffix(suffixes)
        st = self.state(s)
        if query:
            if p.set_only:
                raise ScpiError(-113, f"{p.header} has no query form")
            if len(args) == 1 and isinstance(p.kind, Num) and args[0].upper() in ("MIN", "MINIMUM", "MAX",
                                                                                  "MAXIMUM", "DEF", "DEFAULT"):
                return p.kind.format(p.kind.parse(args[0], p.default), self.NUMBER_FORMAT)
            if args:
                raise ScpiError(-108, ",".join(args))
            return p.kind.format(getattr(st, p.attr), self.NUMBER_FORMAT)
        if not args:
            raise ScpiError(-109, p.header)
        if len(args) > 1:
            raise ScpiError(-108, ",".join(args[1:]))
        value = p.kind.parse(args[0], p.default)
        self.check(p, s, value)
        setattr(st, p.attr, value)
        self.after_set(p, s)
        return None

    def check(self, p: Param, suffix: int, value) -> None:
        """Hook: refuse a value that conflicts with another setting (raise ScpiError -221 or -222)."""

    # ---- IEEE 488.2 common commands (IEEE 488.2-1992, chapter 10) ----
    def common(self, head: str, args: list[str], query: bool) -> str | None:
        key = head + ("?" if query else "")
        if key == "*IDN?":
            return self.IDN
        if key == "*RST":
            self.reset()
            return None
        if key == "*CLS":
            self.errors.clear()
            self.esr = 0
            return None
        if key == "*OPC":
            self.wait_pending()
            self.esr |= 1
            return None
        if key == "*OPC?":
            self.wait_pending()
            return "1"
        if key == "*WAI":
            self.wait_pending()
            return None
        if key == "*STB?":
            return str(self.stb())
        if key == "*ESR?":
            value, self.esr = self.esr, 0
            return str(value)
        if key in ("*ESE", "*SRE"):
            if len(args) != 1:
                raise ScpiError(-109 if not args else -108, head)
            setattr(self, key[1:].lower(), int(Num(0, 255, integer=True).parse(args[0], 0)))
            return None
        if key in ("*ESE?", "*SRE?"):
            return str(getattr(self, key[1:4].lower()))
        if key == "*TST?":
            return "0"
        extra = self.extra_common(key, args)
        if extra is not NotImplemented:
            return extra
        raise ScpiError(-113, head)

    def extra_common(self, key: str, args: list[str]):
        """Hook for the instrument's own common commands (e.g. *LANG); NotImplemented if unknown."""
        return NotImplemented

    def reset(self) -> None:
        """*RST: every setting to its default (subclasses also put their outputs off)."""
        self.reset_settings()

    def queue_error(self, code: int) -> None:
        self.error(code)

    def power_cycle(self) -> None:
        self.errors.clear()
        self.esr = self.ese = self.sre = 0
        self.reset()

    def wait_pending(self) -> None:
        """*OPC?, *OPC, *WAI: the next reply waits for overlapped operations too (clock.py)."""
        self.clock.opc_requested = True

    # ---- :SYSTem:ERRor (SCPI-1999 vol. 2, 21.8) ----
    def q_error_next(self, suffixes, args, query):
        return self.pop_error()

    def q_error_all(self, suffixes, args, query):
        if not self.errors:
            return self.pop_error()
        out = [self.format_error(c, t) for c, t in self.errors]
        self.errors.clear()
        return ",".join(out)

    def q_error_count(self, suffixes, args, query):
        return str(len(self.errors))


#: The error-queue commands every SCPI instrument shares (SCPI-1999 vol. 2, 21.8 SYSTem:ERRor).
ERROR_QUEUE = [
    Command("SYSTem:ERRor:ALL", "q_error_all", query=True),
    Command("SYSTem:ERRor:COUNt", "q_error_count", query=True),
    Command("SYSTem:ERRor[:NEXT]", "q_error_next", query=True),
]
