"""Start the emulated instruments of a lab config as TCP servers on 127.0.0.1 (ephemeral ports)."""

from __future__ import annotations

import os
import socket
import socketserver
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from drivers.emulator_registry import Registry, RegistryError, read_registry, registry_owner, registry_path
from drivers.lab import FaultConfig
from hil.core.schema import ConfigError, format_validation_error
from sim_backend.emulator.base import EmulatedInstrument, emulated_class
from sim_backend.emulator.bench import EmulatedBench
from sim_backend.emulator.faults import GARBAGE, FaultInjector, PendingFault


class RegistryInUse(RuntimeError):
    """The registry file belongs to another emulator that is still running."""


class _Handler(socketserver.StreamRequestHandler):
    def setup(self):
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # replies go out at once

    def handle(self):
        inst = self.server.instrument
        frame = inst.framer()  # a command cut off by a dropped connection does not run into the next one
        for raw in self.rfile:
            line = frame(raw.decode(errors="replace").rstrip("\r\n"))
            if line is None:
                continue
            fault = inst.faults.next(line)
            with self.server.lock:
                if fault is not None and fault.kind in ("drop", "power_cycle"):
                    if fault.kind == "power_cycle":
                        inst.power_cycle()
                    return   # the connection closes; the command is lost
                if fault is not None and fault.kind in ("error", "trip_compliance"):
                    inst.inject(fault)
                reply = inst.handle(line)
            if fault is not None and fault.kind == "delay":
                time.sleep(fault.delay_s)
            if reply is None or (fault is not None and fault.kind == "lose_reply"):
                continue
            if fault is not None and fault.kind == "garbage":
                reply = GARBAGE
            inst.clock.wait()   # outside the bench lock: the other instruments keep working meanwhile
            self.wfile.write((reply.encode() + b"\n") if isinstance(reply, str) else reply + inst.REPLY_TERMINATOR)
            self.wfile.flush()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    instrument: EmulatedInstrument
    lock: threading.RLock

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-reply (killed, timed out) is what instruments see every day: no traceback.
        Anything else is an emulator bug and is printed."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return
        super().handle_error(request, client_address)


class EmulatedLab:
    """Every instrument of the lab config, emulated, with one bench behind them."""

    POLL_S = 0.1  # how often an idle server checks for a stop request: the delay of stop()

    def __init__(self, lab):
        self.lab = lab
        self.bench = EmulatedBench(lab)
        self.instruments = {}
        self.servers: dict[str, _Server] = {}
        self.resources: dict[str, str] = {}
        self._threads: list[threading.Thread] = []

    def start(self) -> EmulatedLab:
        for name, cfg in self.lab.instruments.items():
            cls = emulated_class(cfg.kind)
            inst = cls(name, self.bench, self.lab.limits.get(name))
            inst.faults = FaultInjector(self.lab.emulator.faults.get(name, []))
            server = _Server(("127.0.0.1", 0), _Handler)
            server.instrument = inst
            server.lock = self.bench.lock
            port = server.server_address[1]
            t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": self.POLL_S},
                                 name=f"emulated-{name}", daemon=True)
            t.start()
            self.instruments[name] = inst
            self.servers[name] = server
            self._threads.append(t)
            self.resources[name] = cls.RESOURCE.format(port=port)
        return self

    def write_registry(self, path: Path | None = None) -> Path:
        """Write the live addresses to the registry (default: $HIL_EMULATOR_REGISTRY, else .hil-emulator.json
        here, the file the clients read); refuse to replace the registry of another emulator that still runs."""
        path = registry_path(path)
        owner = registry_owner(path)
        if owner is not None and owner != os.getpid():
            raise RegistryInUse(f"registry {path}: another emulator (pid {owner}) is running and uses it; stop it "
                                "or give this one its own file (--registry)")
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(Registry(self.lab.name, os.getpid(), socket.gethostname(), self.resources).to_json())
        os.replace(tmp, path)
        return path

    @staticmethod
    def remove_registry(path: Path) -> None:
        """Remove the registry if this process wrote it (never another live emulator's)."""
        try:
            if read_registry(path).pid == os.getpid():
                Path(path).unlink()
        except (OSError, RegistryError):
            pass

    def inject(self, name: str, kind: str, **kw: Any) -> PendingFault:
        """Inject a fault into instrument `name`: the fields of the lab config's FaultConfig (see faults.py for
        the kinds); a bad value raises ConfigError naming the field."""
        if name not in self.instruments:
            raise ValueError(f"inject: no emulated instrument {name!r} (has {', '.join(self.instruments)})")
        try:
            fault = FaultConfig(kind=kind, **kw)
        except ValidationError as err:
            raise ConfigError(f"inject: {format_validation_error(err)}") from None
        return self.instruments[name].faults.add(fault)

    def clear_faults(self, name: str) -> None:
        """Forget the instrument's pending faults and remove any fault current it was driven into compliance by."""
        self.instruments[name].faults.pending.clear()
        self.bench.clear_fault_currents(name)

    def outputs(self) -> dict:
        """Every output still on or not at zero, per instrument (empty: the bench is safe)."""
        return {name: out for name, inst in self.instruments.items() if (out := inst.outputs())}

    def stop(self) -> None:
        # Each shutdown waits for its server's next poll: the servers stop together, not one poll after another.
        stopping = [threading.Thread(target=server.shutdown) for server in self.servers.values()]
        for t in stopping:
            t.start()
        for t in stopping:
            t.join()
        for server in self.servers.values():
            server.server_close()
        self.servers.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
