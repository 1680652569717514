"""The Dash app of `hil dashboard`: the runs dir's folders listed, and each one's page refreshed while it runs.

Pages: `/` lists the run folders as `hil runs` does; `/run/<folder>` shows one (a training run, a sweep or a
characterization). `/files/<folder>/<file>` serves a file of a run folder (its PNGs, CSVs, metrics), and only
those: a name that leaves the runs dir is a 404 (hil.runview.resolve_file). Every view reads the folder afresh
on each tick of the page's timer (hil.runview: read only, no lock a running run needs).

A page's parts are components with pattern ids {"type": "fig" | "text", "part": NAME}; one callback fills
every part on each tick, so the page keeps its layout (and a zoomed plot its zoom) while its data changes.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import dash
import flask
from dash import ALL, Input, Output, State, dcc, html

from hil.dashboard import figures as F
from hil.runview import (
    CommandLog,
    RunNotFound,
    conductances,
    journal_progress,
    kind_of,
    mean,
    read_config,
    read_csv,
    read_json,
    read_metrics,
    resolve_file,
    resolve_run,
    run_folders,
    summarize,
    sweep_cells,
)
from hil.store import StoreError

FILE_ROUTE = "/files/"
RUN_ROUTE = "/run/"
SHOWN_FILES = (".png", ".csv", ".json", ".jsonl", ".yaml", ".nc")  # linked from a run's page
COMMANDS_SHOWN = 25  # lines of the command log's tail on a bench run's page
CELL = {"padding": "2px 10px", "borderBottom": "1px solid #ddd", "textAlign": "left"}


def make_app(runs_dir: Path, refresh_s: float = 2.0) -> dash.Dash:
    """The dashboard of runs_dir, refreshing every refresh_s seconds."""
    root = Path(runs_dir).resolve()
    logs = FollowedLogs()
    app = dash.Dash(__name__, title="crossbar-hil dashboard", update_title="", suppress_callback_exceptions=True,
                    assets_folder=str(Path(__file__).with_name("assets")))  # no assets: nothing from the cwd
    app.layout = html.Div([
        dcc.Location(id="url"),
        dcc.Interval(id="tick", interval=int(1000 * refresh_s)),
        html.Div([dcc.Link("crossbar-hil runs", href="/", style={"fontWeight": "bold"}),
                  html.Span(f"  {root}", style={"color": "#666"})], style={"marginBottom": "8px"}),
        html.Div(id="page"),
    ], style={"fontFamily": "sans-serif", "margin": "12px"})

    @app.server.before_request
    def run_file() -> Any:
        """Every request under FILE_ROUTE ends here, before any route (Dash's catch-all page route included)."""
        if not flask.request.path.startswith(FILE_ROUTE):
            return None
        rel = flask.request.path[len(FILE_ROUTE):]
        try:
            path = resolve_file(root, rel)
        except RunNotFound as err:
            return flask.Response(f"not found: {err}\n", status=404, mimetype="text/plain")
        return flask.send_file(path, max_age=0)

    @app.callback(Output("page", "children"), Input("url", "pathname"))
    def page(pathname: str | None) -> Any:
        name = _run_name(pathname)
        if name is None:
            return runs_page()
        try:
            path = resolve_run(root, name)
        except RunNotFound as err:
            return html.Div(str(err), className="not-found")
        return run_page(path)

    @app.callback(Output({"type": "fig", "part": ALL}, "figure"), Output({"type": "text", "part": ALL}, "children"),
                  Output("sent", "data"), Input("tick", "n_intervals"), Input({"type": "fig", "part": ALL}, "id"),
                  Input({"type": "text", "part": ALL}, "id"), State("url", "pathname"), State("sent", "data"))
    def refresh(_n: int | None, fig_ids: list[dict], text_ids: list[dict], pathname: str | None,
                sent: dict[str, str] | None) -> Any:
        name = _run_name(pathname)
        path = None
        if name is not None:
            try:
                path = resolve_run(root, name)
            except RunNotFound:
                return [dash.no_update] * len(fig_ids), [dash.no_update] * len(text_ids), dash.no_update
        view = RunParts(root, path, logs)
        sent = dict(sent or {})
        figures = []
        for i in fig_ids:  # a plot whose file has not changed since this page drew it is not sent again
            version = view.version(i["part"])
            figures.append(dash.no_update if version is not None and sent.get(i["part"]) == version
                           else view.shown_figure(i["part"]))
            if version is not None:
                sent[i["part"]] = version
        texts = [view.shown_text(i["part"]) for i in text_ids]
        return figures, texts, sent

    return app


def _run_name(pathname: str | None) -> str | None:
    if not pathname or not pathname.startswith(RUN_ROUTE):
        return None
    return unquote(pathname[len(RUN_ROUTE):]).rstrip("/")


def _fig(part: str) -> dcc.Graph:
    return dcc.Graph(id={"type": "fig", "part": part}, config={"displaylogo": False})


def _text(part: str, **style: Any) -> html.Div:
    return html.Div(id={"type": "text", "part": part}, style=style)


def _row(*children: Any) -> html.Div:
    return html.Div([html.Div(c, style={"flex": "1", "minWidth": "380px"}) for c in children],
                    style={"display": "flex", "flexWrap": "wrap", "gap": "8px"})


def _sent() -> dcc.Store:
    """Which version of each plot this page has drawn (a new page starts with none)."""
    return dcc.Store(id="sent", data={})


def runs_page() -> html.Div:
    return html.Div([html.H3("runs, sweeps and characterizations"), _text("runs"), _sent()])


def run_page(path: Path) -> html.Div:
    """The parts of a folder's page, by its kind (what fills them: RunParts)."""
    kind = kind_of(path)
    head = [html.H3(path.name), _text("status")]
    if kind == "sweep":
        body = [_fig("sweep"), html.H4("points so far (trials.csv)"), _text("sweep-points"),
                html.H4("table.csv (when the sweep ends)"), _text("sweep-table")]
    elif kind == "characterize":
        body = [_row(_fig("allan"), _fig("node-sigma")), _text("characterize")]
    elif kind == "train":
        cfg = read_config(path)
        layers = len((cfg.get("network") or {}).get("hidden") or []) + 1
        bench = "lab" in (read_json(path / "run.json") or {})  # a bench run names its lab from its first run.json
        body = [_row(_fig("accuracy"), _fig("loss"), _fig("speed")), _text("noise"),
                *([_row(_fig("bench"), _fig("faults")), _text("commands")] if bench else []),
                *[_row(_fig(f"g-hist-{k}"), _fig(f"g-map-{k}")) for k in range(layers)]]
    else:  # a calibration: its report as written
        body = [_text("report")]
    return html.Div([*head, *body, html.H4("files"), _text("files"), _sent()])


class RunParts:
    """Fills the parts of a page from the folder as it is now (path None: the runs list)."""

    def __init__(self, root: Path, path: Path | None, logs: FollowedLogs):
        self.root, self.path, self.logs = root, path, logs
        self._rows: list[dict[str, Any]] | None = None

    @property
    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            self._rows = read_metrics(self.path) if self.path is not None else []
        return self._rows

    def shown_figure(self, part: str) -> Any:
        """figure(part), or a note in its place naming the file that is damaged or went away meanwhile."""
        try:
            return self.figure(part)
        except (OSError, ValueError, KeyError, StoreError) as err:
            return F.empty(part, f"unreadable: {err}")

    def shown_text(self, part: str) -> Any:
        try:
            return self.text(part)
        except (OSError, ValueError, KeyError, StoreError) as err:
            return html.P(f"unreadable: {err}", className="unreadable")

    def version(self, part: str) -> str | None:
        """The state of the file a plot is drawn from (its size and time); None: draw it anew each time."""
        p = self.path
        assert p is not None
        source = {"accuracy": "metrics.jsonl", "loss": "metrics.jsonl", "speed": "metrics.jsonl",
                  "bench": "metrics.jsonl", "faults": "commands.jsonl", "sweep": "trials.csv",
                  "allan": "characterize.json", "node-sigma": "characterize.json"}.get(part)
        if part.startswith("g-"):
            source = "checkpoint.pt"
        if source is None:
            return None
        try:
            st = (p / source).stat()
        except FileNotFoundError:
            return "none"
        return f"{st.st_size}:{st.st_mtime_ns}"

    def figure(self, part: str) -> Any:
        p = self.path
        assert p is not None
        if part == "accuracy":
            return F.metric_lines(self.rows, "accuracy", {"train": "train_acc", "test": "test_acc"},
                                  "accuracy (%)", scale=100)
        if part == "loss":
            return F.metric_lines(self.rows, "loss (free phase)", {"train": "train_loss", "test": "test_loss"},
                                  "loss (V^2 per sample)", log_y=True)
        if part == "speed":
            return F.metric_lines(self.rows, "training speed", {"samples/s": "samples_per_s"}, "samples/s")
        if part == "bench":
            return F.bench_lines(self.rows)
        if part == "faults":
            return F.fault_bars(self.logs.get(p / "commands.jsonl").faults)
        if part.startswith("g-"):
            snap = self.logs.snapshot(p)
            k = int(part.rsplit("-", 1)[1])
            if snap is None or k >= len(snap["weights"]):
                return F.empty(f"layer {k} conductances", "no snapshot yet")
            where = f"snapshot of epoch {snap['epoch'] + (1 if snap['in_epoch'] else 0)}, step {snap['step']}"
            if snap["in_epoch"] is False and snap["epoch"] == 0:
                where = "starting state"
            draw = F.conductance_histogram if part.startswith("g-hist") else F.conductance_map
            return draw(snap["weights"][k], k, where)
        if part == "sweep":
            from_trials = sweep_cells(p)
            return F.sweep_picture(from_trials) if from_trials else F.empty("sweep", "no trials.csv yet")
        if part in ("allan", "node-sigma"):
            rep = read_json(p / "characterize.json") or {}
            # a bench reads in normalized volts, voltage_unit_V volts each
            unit = f"x {rep['voltage_unit_V']:g} V" if rep.get("voltage_unit_V") else "V"
            if part == "allan":
                return F.allan_plot(rep["allan"], unit) if rep.get("allan") else F.empty("Allan deviation", "no Allan data")
            return F.node_sigma(rep["nodes"], rep["estimate"], unit) if rep.get("estimate") else F.empty("sigma", "none")
        return F.empty(part, "unknown part")

    def text(self, part: str) -> Any:
        if part == "runs":
            return self.runs_table()
        p = self.path
        assert p is not None
        if part == "status":
            return self.status()
        if part == "noise":
            return self.noise()
        if part == "commands":
            return self.commands()
        if part == "files":
            return html.Ul([html.Li(html.A(f.name, href=FILE_ROUTE + quote(f"{p.name}/{f.name}")))
                            for f in sorted(p.iterdir()) if f.is_file() and f.suffix in SHOWN_FILES])
        if part == "sweep-points":
            cells = sweep_cells(p)
            if not cells:
                return "no trial finished yet"
            return _table([*cells["keys"], "trials", "mean test acc", "convergence rate"],
                          [[*pt["key"].values(), pt["trials"], f"{pt['mean_test_acc']:.1%}",
                            f"{pt['convergence_rate']:.0%}"] for pt in cells["points"]])
        if part == "sweep-table":
            got = read_csv(p / "table.csv")
            return _table(*got) if got else "not written yet"
        if part == "report":
            return html.Pre(json.dumps(read_json(p / "calibration.json"), indent=1), style={"fontSize": "12px"})
        if part == "characterize":
            rep = read_json(p / "characterize.json") or {}
            est, allan = rep.get("estimate") or {}, rep.get("allan") or {}
            return html.P(f"{rep.get('readings')} readings per node, {len(rep.get('nodes', []))} nodes; pooled sigma "
                          f"{est.get('pooled_sigma', float('nan')):.3g} V; Allan floor "
                          f"{allan.get('floor_V') or 'none found'}, N_max {allan.get('n_max') or '-'}")
        return ""

    def runs_table(self) -> Any:
        if not self.root.is_dir():
            return f"no folder {self.root} yet"
        runs = [summarize(p) for p in run_folders(self.root)]
        if not runs:
            return f"no run folders in {self.root} yet"
        body = [[dcc.Link(r.name, href=RUN_ROUTE + quote(r.name)), r.kind, r.status, r.epochs,
                 "-" if r.test_acc is None else f"{r.test_acc:.1%}", r.updated, "; ".join(r.notes)]
                for r in reversed(runs)]
        return _table(["run", "kind", "status", "epochs", "test acc", "updated", "notes"], body)

    def status(self) -> Any:
        p = self.path
        assert p is not None
        s = summarize(p)
        parts: list[Any] = [html.Span(s.status, className="run-status", style={"fontWeight": "bold"}), f" ({s.kind})"]
        if s.kind == "train":
            cfg = read_config(p)
            epochs = (cfg.get("train") or {}).get("epochs")
            parts += [", epochs done: ", html.Span(str(len(self.rows)), className="epochs-done"), f" of {epochs}"]
            prog = journal_progress(p)
            if prog and prog["epoch"] is not None and prog["epoch"] > len(self.rows):  # an epoch in training
                acc = f", free-phase accuracy so far {prog['correct'] / prog['samples']:.1%}" if (
                    prog["correct"] is not None and prog["samples"]) else ""
                parts.append(f"; epoch {prog['epoch']}: {prog['samples']} samples trained{acc}")
            if prog:
                parts.append(f"; {prog['steps_done']} steps journaled")
            if self.rows:
                last = self.rows[-1]
                parts.append(f"; last test accuracy {mean(last.get('test_acc')) or 0:.1%}")
        if s.notes:
            parts.append(" - " + "; ".join(s.notes))
        return html.P(parts)

    def noise(self) -> Any:
        """N, and sigma: the simulated one, or on a bench the newest characterization of the same lab here."""
        p = self.path
        assert p is not None
        n = read_config(p).get("noise") or {}
        samples = int(n.get("samples", 1))
        readings = f"N = {samples} reading{'s' if samples != 1 else ''} per node and state"
        lab = (read_json(p / "run.json") or {}).get("lab")
        if not lab:
            sigma = float(n.get("sigma", 0.0))
            return html.P(f"{readings}; sigma = {sigma:g} V per reading, sigma/sqrt(N) = {sigma / samples ** 0.5:.3g} V "
                          "after averaging (simulated noise)")
        for folder in reversed(run_folders(self.root)):
            rep = read_json(folder / "characterize.json") if folder != p else None
            if rep and rep.get("lab") and Path(rep["lab"]).resolve() == Path(lab).resolve() and rep.get("estimate"):
                volt = float(rep.get("voltage_unit_V") or 1.0)  # bench readings are in normalized volts
                sigma = float(rep["estimate"]["pooled_sigma"]) * volt
                return html.P([f"{readings}; the bench's noise from ", dcc.Link(folder.name, href=RUN_ROUTE + quote(folder.name)),
                               f": sigma = {sigma:.3g} V per reading (pooled), sigma/sqrt(N) = "
                               f"{sigma / samples ** 0.5:.3g} V after averaging"])
        return html.P(f"{readings}; no characterization of this bench here yet (`hil characterize --lab "
                      f"{Path(lab).name}` estimates its sigma)")

    def commands(self) -> Any:
        """A bench run's traffic from its command log (followed as it grows), and its faults, newest last."""
        p = self.path
        assert p is not None
        log = self.logs.get(p / "commands.jsonl")
        last = self.rows[-1] if self.rows else {}
        totals: list[Any] = [f"{sum(log.commands.values())} commands sent, ",
                  html.Span(str(sum(log.queries.values())), className="round-trips"), " answered (round trips); ",
                  html.Span(str(len(log.faults)), className="faults-logged"), " faults logged"]
        if last:
            totals.append(f"; at the last epoch end: {last.get('retries', 0)} retries, {last.get('pulses', '-')} "
                          f"programming pulses, {last.get('stuck_devices', '-')} stuck devices")
        prog = journal_progress(p)
        if prog:
            totals.append(f"; {prog['devices_programmed']} device writes journaled ({prog['pulses']} pulses)")
        per = _table(["instrument", "commands", "round trips", "faults"],
                     [[i, n, log.queries.get(i, 0), sum(f.get("instrument") == i for f in log.faults)]
                      for i, n in sorted(log.commands.items())])
        faults = [f"{r.get('t', 0):10.4f}  {r.get('instrument')}: {r.get('kind', r.get('fault'))} -> "
                  f"{r.get('action', '')}  ({r.get('command')})" for r in log.faults[-10:]]
        lines = [f"{r.get('t', 0):10.4f}  {r.get('instrument', '?'):<11} {r.get('command')}"
                 + (f"  -> {r['reply']}" if r.get("reply") is not None else "")
                 + (f"  [{r.get('kind', r['fault'])}: {r.get('action', '')}]" if "fault" in r else "")
                 for r in log.tail[-COMMANDS_SHOWN:]]
        return html.Div([
            html.H4("bench"), html.P(totals), per,
            html.H4("faults (the last 10)"),
            html.Pre("\n".join(faults) or "none", className="faults"),
            html.H4(f"command log, the last {COMMANDS_SHOWN} exchanges"),
            html.Pre("\n".join(lines), className="command-tail",
                     style={"fontSize": "11px", "maxHeight": "300px", "overflow": "auto", "background": "#f6f6f6"}),
        ])


class FollowedLogs:
    """What the open pages follow, shared by the server's threads: one CommandLog per command log, and each run's
    last snapshot, read again only when checkpoint.pt was replaced (a paper-size one is 6 MB)."""

    def __init__(self) -> None:
        self._logs: dict[Path, CommandLog] = {}
        self._snapshots: dict[Path, tuple[tuple[int, int], dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def snapshot(self, run: Path) -> dict[str, Any] | None:
        try:
            st = (run / "checkpoint.pt").stat()
        except FileNotFoundError:
            return None
        key = (st.st_mtime_ns, st.st_size)
        with self._lock:
            held = self._snapshots.get(run)
            if held is None or held[0] != key:
                held = (key, conductances(run))
                self._snapshots[run] = held
            return held[1]

    def get(self, path: Path) -> CommandLog:
        with self._lock:
            log = self._logs.setdefault(path, CommandLog(path, keep=COMMANDS_SHOWN))
            return log.update()


def _table(header: list[str], rows: list[list[Any]]) -> html.Table:
    return html.Table([html.Thead(html.Tr([html.Th(h, style=CELL) for h in header])),
                       html.Tbody([html.Tr([html.Td(c, style=CELL) for c in row]) for row in rows])],
                      style={"borderCollapse": "collapse", "fontSize": "13px"})
