"""One home per fact (issue 22): each fact that used to be written in several places is defined once.

Each check greps the project's Python source for the fact's pattern and asserts it occurs only in its home.
PENDING lists the call sites in files another change owns that still hold a copy; a site there that no longer
matches fails the test too, so the list is emptied as they are switched.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hil", "sim_backend", "drivers", "calibration")

# fact -> {file: old line} still to switch to the fact's home (files owned by the CLI and sweep-engine change)
PENDING: dict[str, dict[str, str]] = {}


def sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def code_lines(text: str) -> list[str]:
    """The lines of a module without its comments (a comment may name a formula without defining it)."""
    return [line.split("#", 1)[0] if not line.lstrip().startswith(("'", '"')) else line for line in text.splitlines()]


def where(pattern: str) -> dict[str, list[str]]:
    """file -> the code lines matching the regex `pattern`."""
    rx = re.compile(pattern)
    found: dict[str, list[str]] = {}
    for path, text in sources().items():
        hits = [line.strip() for line in code_lines(text) if rx.search(line)]
        if hits:
            found[path] = hits
    return found


def only_in(pattern: str, homes: set[str], fact: str | None = None) -> None:
    found = where(pattern)
    pending = PENDING.get(fact or "", {})
    stray = {path: hits for path, hits in found.items() if path not in homes and path not in pending}
    assert not stray, f"{pattern!r} outside its home {sorted(homes)}: {stray}"
    assert set(found) & homes, f"{pattern!r}: its home {sorted(homes)} no longer has it (the test looks for nothing)"
    for path, line in pending.items():  # a switched call site: remove it from PENDING
        assert any(line in hit for hit in found.get(path, [])), f"{path} no longer holds {line!r}: drop it from PENDING"


def test_the_input_doubling_has_one_home():
    only_in(r"cat\(\[\s*(\w+),\s*-\1\s*\]", {"hil/core/backend.py"})  # gamma * [x, -x]
    only_in(r"(?<![\w.])2 \* (len\(|\w+\[0\]|n_in|data\.n_inputs|int\(layer_sizes)", {"hil/core/backend.py"},
            "node sizes")  # 2 * inputs, the doubled input nodes
    only_in(r"sizes\[0\] \+ i\b|inputs \+ i\b", {"hil/core/backend.py"})  # node inputs + i carries -gamma*x_i


def test_seed_formulas_have_one_home():
    # a seed times or plus a literal, or a large prime near a generator: only in the named seed streams
    only_in(r"seed\)? ?[*+] ?\d|manual_seed\([^)]*\d{3}|default_rng\([^)]*\+", {"hil/core/seeds.py"})
    only_in(r"\.seed \+ [a-z]\b|\bint\(seed\) \+ r\b", {"hil/core/seeds.py"}, "seed formulas")  # replica seeds


def test_the_mains_check_has_one_home():
    only_in(r"50\.0, 60\.0|50 or 60", {"hil/core/mains.py"})


def test_the_write_verify_defaults_have_one_home():
    only_in(r"WRITE_VERIFY_MAX_(PULSES|REVERSALS) = \d", {"hil/core/devices/config.py"})
    # the simulator's devices.verify_* and the bench's programming.max_* take them from there
    assert not where(r"(max_pulses|max_reversals): int = Field\(default=(30|3)\b"), "a write-verify default as a number"
    assert len(where(r"default=WRITE_VERIFY_MAX_(PULSES|REVERSALS)")) == 2


def test_one_fault_schema():
    only_in(r"^class \w*Fault\w*\((StrictModel|BaseModel)\)|^class Fault\b", {"drivers/lab.py"})
    only_in(r'"drop", "delay", "garbage"', {"drivers/lab.py"})  # the kinds are listed once, in FaultConfig


def test_the_emulator_registry_is_parsed_in_one_place():
    only_in(r"""["']resources["']""", {"drivers/emulator_registry.py"})
    only_in(r"""["']HIL_EMULATOR_REGISTRY["']""", {"drivers/emulator_registry.py"})


def test_one_strict_base_one_yaml_reader_one_error_formatter():
    only_in(r"""extra=["']forbid["']""", {"hil/core/schema.py"})
    only_in(r"^class _?Strict", {"hil/core/schema.py"})
    only_in(r"^def read_yaml\(", {"hil/core/schema.py"})
    only_in(r"^def format_validation_error\(|\.errors\(\)\[0\]", {"hil/core/schema.py"})
    only_in(r"^class ConfigError\(", {"hil/core/schema.py"})


def test_the_dead_code_is_gone():
    assert not where(r"def split_nodes\(|^DATASETS = |^KINDS = |def one_hot\(|noise_rng")


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_no_type_cycle_between_the_lab_config_and_the_driver_base():
    """Each driver gets its own slice of the lab config (DriverSettings), so the driver base never needs the
    lab config's types, even for type checking."""
    assert "drivers.lab" not in imported_modules(ROOT / "drivers" / "session.py")
    assert "drivers.session" not in imported_modules(ROOT / "drivers" / "lab.py")
    for path in (ROOT / "drivers").glob("*.py"):
        if path.name not in ("lab.py", "bench.py", "crossbar.py", "nudge.py", "programming.py", "pulse_programmer.py"):
            assert "drivers.lab" not in imported_modules(path), f"{path.name}: a driver takes its DriverSettings"


@pytest.mark.parametrize("fact", sorted(PENDING))
def test_pending_call_sites_are_listed_with_their_file(fact):
    for path in PENDING[fact]:
        assert (ROOT / path).is_file(), f"PENDING names {path}, which is gone"
