"""`hil dashboard` in a real browser (Debian's headless Chromium through selenium), and what it refuses to serve.

The browser tests start real processes: `hil dashboard` on a free port, `hil train` (and for the bench, `hil
emulate`) writing into a runs dir, and watch the page change while the run trains. They skip, saying why, only
where no Chromium and chromedriver are installed (.ci/run installs Debian's chromium and chromium-driver).

HIL_DASHBOARD_SCREENSHOTS=DIR saves the pages the browser tests end on as PNGs in DIR (docs/img/dashboard.png
was taken so: `HIL_DASHBOARD_SCREENSHOTS=docs/img pytest tests/test_dashboard.py -k browser`).
"""

from __future__ import annotations

import contextlib
import csv
import http.client
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from werkzeug.serving import make_server

from hil.cli import main
from hil.dashboard.app import FollowedLogs, RunParts, make_app
from hil.runview import journal_progress

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lab-emulated.yaml"
TINY = ["--hidden", "8", "--epochs", "2", "--train-limit", "40", "--test-limit", "20", "--no-progress"]
STARTUP_S = 90  # a loaded 2-core machine takes several seconds to import dash and torch
SHOTS = os.environ.get("HIL_DASHBOARD_SCREENSHOTS")


# ---- path traversal and read-only -------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path):
    """A runs dir with one finished run and a secret beside it, served by the dashboard's app on a free port."""
    runs = tmp_path / "runs"
    assert main(["train", *TINY, "--runs-dir", str(runs)]) == 0
    (run,) = runs.iterdir()
    (tmp_path / "secret.txt").write_text("SECRET-OUTSIDE-THE-RUNS-DIR\n")
    (run / "link.txt").symlink_to(tmp_path / "secret.txt")  # a link inside a run folder, pointing out of it
    with serving(runs) as port:
        yield port, run


@contextlib.contextmanager
def serving(runs: Path, refresh_s: float = 2.0):
    """The dashboard's app on a free port of 127.0.0.1, in a thread of this process; yields the port."""
    server = make_server("127.0.0.1", 0, make_app(runs, refresh_s).server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET with the request target sent as written (http.client neither normalizes nor re-encodes it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", target)
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_a_file_outside_the_runs_dir_is_refused(served):
    port, run = served
    status, body = raw_get(port, f"/files/{run.name}/metrics.jsonl")
    assert status == 200 and body == (run / "metrics.jsonl").read_bytes()  # a run's own file is served
    for target in ("/files/../../etc/passwd", "/files/..%2F..%2Fetc%2Fpasswd", "/files/%2e%2e/%2e%2e/etc/passwd",
                   "/files/../secret.txt", f"/files/{run.name}/../../secret.txt", "/files//etc/passwd",
                   "/files/%2Fetc%2Fpasswd", f"/files/{run.name}/link.txt", f"/files/{run.name}/..%2F..%2Fsecret.txt",
                   "/files/..\\..\\secret.txt", f"/files/{run.name}", "/files/"):
        status, body = raw_get(port, target)
        assert status == 404, (target, status)
        assert b"SECRET" not in body and b"root:" not in body, target


def test_a_run_page_outside_the_runs_dir_is_refused(served):
    """The page callback resolves the run named in the URL under the runs dir, as the file route does."""
    port, run = served

    def page(pathname: str) -> str:
        payload = {"output": "page.children", "outputs": {"id": "page", "property": "children"},
                   "inputs": [{"id": "url", "property": "pathname", "value": pathname}],
                   "changedPropIds": ["url.pathname"], "state": []}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/_dash-update-component", json.dumps(payload), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read().decode()

    assert run.name in page(f"/run/{run.name}")
    for name in ("../..", "..%2F..%2Fetc", f"{run.name}/../..", "/etc", "nope"):
        shown = page(f"/run/{name}")
        assert "not-found" in shown and ("no run folder" in shown or "not a path" in shown), (name, shown[:300])


def test_the_dashboard_writes_nothing_into_a_run_folder(served):
    """Reading a finished run's journal (read-only, immutable) and files leaves its folder as it was."""
    port, run = served
    before = sorted(p.name for p in run.iterdir())
    assert journal_progress(run)["steps_done"] == 20  # 40 samples, batch 4, 2 epochs
    assert raw_get(port, f"/files/{run.name}/accuracy.png")[0] == 200
    assert sorted(p.name for p in run.iterdir()) == before  # no -shm or -wal file left by the reader


# ---- the browser --------------------------------------------------------------------------------------------
def find_browser() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@pytest.fixture(scope="module")
def browser():
    found = find_browser()
    if found is None:
        pytest.skip("no headless Chromium here (chromium and chromedriver not on PATH; Debian: apt-get install "
                    "chromium chromium-driver, as .ci/run does)")
    from selenium import webdriver  # selenium: only the browser tests need it
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(found[1]), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


class Proc:
    """A `python -m hil.cli ...` process started by a test, its stdout read line by line in a thread."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None):
        self.p = subprocess.Popen([sys.executable, "-m", "hil.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.out.append(line)
            self.lines.put(line)

    def wait_line(self, word: str, timeout: float = STARTUP_S) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.p.poll() is None, "".join(self.out)
                continue
            if word in line:
                return line
        raise AssertionError(f"no line with {word!r} in {timeout} s:\n" + "".join(self.out))

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()  # SIGTERM: the command's own Ctrl-C path
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def dashboard(runs: Path, cwd: Path) -> tuple[Proc, str]:
    proc = Proc(["dashboard", "--runs-dir", str(runs), "--port", "0", "--refresh-s", "0.5"], cwd)
    line = proc.wait_line("http://")
    return proc, line.split(" on ", 1)[1].split()[0]


def poll(what, timeout: float, step: float = 0.1):
    """what() until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"waited {timeout} s for {getattr(what, '__name__', what)}")


def texts(driver, css: str) -> list[str]:
    from selenium.webdriver.common.by import By  # selenium: only the browser tests need it

    try:
        return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]
    except Exception:  # noqa: BLE001 - an element replaced by the page's refresh between find and read
        return []


def open_run_page(driver, url: str, runs: Path) -> Path:
    """Wait for the run folder, then open its page from the runs list (a click, as a user would)."""
    from selenium.common.exceptions import WebDriverException  # selenium: only the browser tests need it
    from selenium.webdriver.common.by import By

    run = poll(lambda: next((p for p in runs.iterdir() if (p / "config.yaml").is_file()), None), STARTUP_S)

    def click() -> bool:
        try:
            driver.find_element(By.LINK_TEXT, run.name).click()
            return True
        except WebDriverException:  # not listed yet, or replaced by the list's refresh between find and click
            return False

    poll(click, STARTUP_S)
    poll(lambda: driver.find_elements(By.CSS_SELECTOR, ".run-status"), STARTUP_S)
    return run


def screenshot(driver, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.set_window_size(1400, 600)  # shorter than the page, so its height is the content's
        time.sleep(0.5)
        height, frame = driver.execute_script("return [document.documentElement.scrollHeight, "
                                              "window.outerHeight - window.innerHeight]")
        driver.set_window_size(1400, height + frame + 10)  # the whole page in the window, nothing below it
        time.sleep(1.5)  # plotly redraws at the new size, and a last refresh of every plot
        driver.save_screenshot(str(Path(SHOTS) / name))
        driver.set_window_size(1400, 1900)


def test_browser_sees_a_training_run_grow(browser, tmp_path):
    """The app in this process (the bench test below starts `hil dashboard` itself), `hil train` in another."""
    runs = tmp_path / "runs"
    runs.mkdir()
    epochs = 8
    train = None
    with serving(runs, refresh_s=0.5) as port:
        url = f"http://127.0.0.1:{port}/"
        try:
            browser.get(url)
            poll(lambda: any("no run folders" in t for t in texts(browser, "#page")), STARTUP_S)
            # the run starts once the page is open, so the page sees it from its first epoch on
            train = Proc(["train", "--hidden", "32", "--epochs", str(epochs), "--test-limit", "100", "--no-progress",
                          "--runs-dir", str(runs)], tmp_path)  # the digits, 1437 samples: epochs of about 0.5 s
            run = open_run_page(browser, url, runs)
            seen: list[int] = []
            running_seen = False
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                count, status = texts(browser, ".epochs-done"), texts(browser, ".run-status")
                if count and count[0].isdigit() and (not seen or int(count[0]) != seen[-1]):
                    seen.append(int(count[0]))
                running_seen |= status == ["running"] and bool(seen)
                if status == ["completed"] and seen and seen[-1] == epochs:
                    break
                time.sleep(0.05)
            assert train.p.wait(timeout=60) == 0, "".join(train.out)
            # the count grew on the open page while the run trained, one epoch at a time or faster, to the end
            assert running_seen and len(seen) >= 2 and seen == sorted(seen) and seen[-1] == epochs, seen
            assert seen[0] < epochs
            metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            acc = f"{metrics[-1]['test_acc']:.1%}"
            assert any(f"last test accuracy {acc}" in t for t in texts(browser, "#page")), acc
            screenshot(browser, "dashboard.png")
        finally:
            if train is not None:
                train.stop()


@pytest.mark.slow
def test_browser_shows_a_bench_runs_round_trips_and_faults_live(browser, tmp_path):
    """A bench run on the emulated lab, with faults its retries recover from: the page shows round trips and
    faults while it trains, and at the end the same counts as its command log."""
    tree = yaml.safe_load(EXAMPLE.read_text())
    tree["emulator"]["time_scale"] = 0.0
    tree["emulator"]["faults"] = {  # garbage replies once each: one while programming, one while reading
        "board": [{"kind": "garbage", "match": r"^READ", "after": 30}],
        "smu_hidden": [{"kind": "garbage", "match": r"^:TRAC:DATA\?", "after": 20}]}
    lab = tmp_path / "lab.yaml"
    lab.write_text(yaml.safe_dump(tree))
    runs = tmp_path / "runs"
    runs.mkdir()
    emu = Proc(["emulate", "--lab", str(lab), "--registry", str(tmp_path / "reg.json"), "--duration", "300"], tmp_path)
    dash, train = None, None
    try:
        emu.wait_line("Ctrl-C")
        registry = {"HIL_EMULATOR_REGISTRY": str(tmp_path / "reg.json")}
        dash, url = dashboard(runs, tmp_path)
        browser.get(url)
        train = Proc(["train", "--lab", str(lab), "--train-limit", "16", "--test-limit", "8", "--epochs", "2",
                      "--no-progress", "--runs-dir", str(runs)], tmp_path, registry)
        run = open_run_page(browser, url, runs)
        assert poll(lambda: any("no characterization of this bench here yet" in t for t in texts(browser, "#page")),
                    STARTUP_S)

        def live() -> bool:  # the page, while the run is running, shows round trips and a fault
            trips, faults = texts(browser, ".round-trips"), texts(browser, ".faults-logged")
            return (texts(browser, ".run-status") == ["running"] and bool(trips) and trips[0].isdigit()
                    and int(trips[0]) > 0 and bool(faults) and faults[0].isdigit() and int(faults[0]) >= 1)

        poll(live, 120)
        assert train.p.wait(timeout=180) == 0, "".join(train.out)
        poll(lambda: texts(browser, ".run-status") == ["completed"], STARTUP_S)
        log = [json.loads(x) for x in (run / "commands.jsonl").read_text().splitlines()]
        faults = [r for r in log if "fault" in r]
        trips = sum(1 for r in log if "fault" not in r and r.get("reply") is not None)
        assert {r["instrument"] for r in faults} >= {"board", "smu_hidden"}
        poll(lambda: texts(browser, ".faults-logged") == [str(len(faults))]
             and texts(browser, ".round-trips") == [str(trips)], STARTUP_S)
        # The page lists the log's last 10 faults: both injected garbage replies are in the log, and every one of
        # the last 10 is on the page (on a loaded machine, late replies can add faults that push the garbage out).
        assert sum("garbage" in str(r.get("kind", r.get("fault"))) for r in faults) >= 2, faults
        shown = [f"{r.get('instrument')}: {r.get('kind', r.get('fault'))} -> " for r in faults[-10:]]
        assert poll(lambda: all(line in "\n".join(texts(browser, ".faults")) for line in shown), STARTUP_S)
        # a characterization of the same bench: the run's page takes the bench's noise from it
        characterize = Proc(["characterize", "--lab", str(lab), "--readings", "32", "--name", "noise",
                             "--runs-dir", str(runs)], tmp_path, registry)
        assert characterize.p.wait(timeout=STARTUP_S) == 0, "".join(characterize.out)
        (noise,) = runs.glob("*-noise")
        sigma_V = json.loads((noise / "characterize.json").read_text())["estimate"]["pooled_sigma"] * \
            tree["units"]["voltage_unit_V"]  # bench readings are in normalized volts
        poll(lambda: any(f"the bench's noise from {noise.name}: sigma = {sigma_V:.3g} V" in t
                         for t in texts(browser, "#page")), STARTUP_S)
        screenshot(browser, "dashboard-bench.png")
    finally:
        for proc in (train, dash, emu):
            if proc is not None:
                proc.stop()


def test_a_characterization_and_a_sweep_draw_what_their_files_hold(tmp_path):
    """The parts of their pages, as the refresh callback fills them (hil.dashboard.app.RunParts)."""
    runs = tmp_path / "runs"
    assert main(["characterize", "--hidden", "8", "--sigma", "1e-3", "--readings", "128", "--test-limit", "10",
                 "--name", "ch", "--runs-dir", str(runs)]) == 0
    assert main(["sweep", "grid", "--vary", "ep.beta=0.5,1", "--vary", "ep.eta=0.01,0.02", "--trials", "1",
                 "--hidden", "8", "--epochs", "1", "--train-limit", "40", "--test-limit", "20", "--no-progress",
                 "--threshold", "0.05", "--name", "sw", "--runs-dir", str(runs)]) == 0
    ch = next(runs.glob("*-ch"))
    sw = next(runs.glob("*-sw"))
    logs = FollowedLogs()
    view = RunParts(runs.resolve(), ch.resolve(), logs)
    report = json.loads((ch / "characterize.json").read_text())
    assert list(view.figure("allan").data[0].y) == pytest.approx(report["allan"]["adev_V"])
    assert list(view.figure("node-sigma").data[0].y) == pytest.approx(report["estimate"]["sigma"])
    assert view.version("allan") == RunParts(runs.resolve(), ch.resolve(), logs).version("allan")  # unchanged file
    view = RunParts(runs.resolve(), sw.resolve(), logs)
    heat = view.figure("sweep").data[0]
    table = {(r["ep.beta"], r["ep.eta"]): float(r["convergence_rate"])
             for r in csv.DictReader((sw / "table.csv").open())}
    for i, eta in enumerate(heat.y):
        for j, beta in enumerate(heat.x):
            assert heat.z[i][j] == pytest.approx(table[(beta, eta)])
    assert "mean_best5_test_acc" in str(view.text("sweep-table"))


def test_a_port_in_use_is_one_clear_error(tmp_path, capsys):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["dashboard", "--runs-dir", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hil: error: --host/--port: cannot listen on 127.0.0.1:{port}"), err
    for argv, named in ((["--port", "70000"], "--port: 70000"), (["--refresh-s", "0"], "--refresh-s: 0 s")):
        assert main(["dashboard", "--runs-dir", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"hil: error: {named}"), err


def test_a_damaged_file_is_named_on_the_page_not_an_error(served):
    port, run = served
    view = RunParts(run.parent, run, FollowedLogs())
    assert "last test accuracy" in str(view.shown_text("status"))
    (run / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n{"epoch": 2}\n')
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    view = RunParts(run.parent, run, FollowedLogs())
    assert "metrics.jsonl: line 2 is not JSON" in str(view.shown_text("status"))
    assert "line 2 is not JSON" in str(view.shown_figure("accuracy").layout.annotations[0].text)
    assert "checkpoint.pt is damaged" in str(view.shown_figure("g-hist-0").layout.annotations[0].text)
