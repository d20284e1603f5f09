"""The web UI on a 10,000-trial study, in a real browser: time to the first leaderboard paint
and bytes transferred for the first screen, against fetching the whole trial list.

The study is the one `bench/leaderboard.py` builds (10,000 finished trials, 10 eval steps of
five metrics each, written straight into a fresh database through the repository functions and
bulk inserts). `tuner serve --slots 0` serves it on loopback with a read token; headless
Chromium (Debian's, driven by Playwright) opens the study page, in a fresh browser context each
time (an empty cache), with the token in localStorage as a signed-in user has it:

- **first paint**: from navigation start to the frame after the leaderboard's rows are in
  the page (the page's `leaderboard-painted` performance mark);
- **first screen bytes**: every byte received (headers and bodies, as on the wire: Chromium's
  `encodedDataLength`) until the network is quiet, without scrolling: the page's assets, the
  token probe, the study, the first leaderboard page (50 rows), the event stream, the curves
  of the best 10 trials;
- **whole page**: the same after scrolling to the bottom, which loads the panels below the
  fold (the optimization history of the first 500 trials, parallel coordinates of the best
  100, the importances);
- **warm reload**: the same page again in the same context (assets answered 304).

The comparison, in the same run and browser: the whole trial list fetched from the same API
(`GET .../trials?limit=500`, every page) and drawn as one table, what a page without server
paging does. The importance endpoint is timed on its own first (cold: Optuna's evaluator over
10,000 trials; then cached).

    python bench/web.py                        # SQLite (a temp file), 10,000 trials
    python bench/web.py --database postgresql  # a fresh database on 127.0.0.1:5432
    python bench/web.py --keep-db /tmp/web.db  # build once, measure again later
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
TOKEN_KEY = "estimator-tuner.token"
GOAL_PAINT_MS = 1000.0
GOAL_FIRST_SCREEN_BYTES = 200_000
PAINTED = "performance.getEntriesByName('leaderboard-painted').length > 0"


@dataclass
class Traffic:
    """Bytes per request, from Chromium's network events (CDP), and when the network is idle."""

    urls: dict[str, str] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    open: set[str] = field(default_factory=set)
    last: float = field(default_factory=time.monotonic)

    def attach(self, cdp: Any) -> None:
        cdp.on("Network.requestWillBeSent", self._sent)
        cdp.on("Network.dataReceived", self._data)
        cdp.on("Network.loadingFinished", self._finished)
        cdp.on("Network.loadingFailed", self._failed)

    def _sent(self, event: dict[str, Any]) -> None:
        self.urls[event["requestId"]] = event["request"]["url"]
        self.open.add(event["requestId"])
        self.last = time.monotonic()

    def _data(self, event: dict[str, Any]) -> None:
        rid = event["requestId"]
        self.received[rid] = self.received.get(rid, 0) + int(event.get("encodedDataLength", 0))
        self.last = time.monotonic()

    def _finished(self, event: dict[str, Any]) -> None:
        self.received[event["requestId"]] = int(event["encodedDataLength"])
        self.open.discard(event["requestId"])
        self.last = time.monotonic()

    def _failed(self, event: dict[str, Any]) -> None:
        self.open.discard(event["requestId"])
        self.last = time.monotonic()

    def total(self, where: Callable[[str], bool] = lambda _url: True) -> int:
        return sum(n for rid, n in self.received.items() if where(self.urls.get(rid, "")))

    def requests(self) -> int:
        return len(self.urls)

    def wait_quiet(self, page: Any, quiet_s: float = 0.6, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            page.wait_for_timeout(100)  # lets Playwright dispatch the events
            if not self.open and time.monotonic() - self.last >= quiet_s:
                return
        raise RuntimeError(f"the network did not go quiet; open: {self.open}")


@dataclass
class Load:
    paint_ms: float
    first_bytes: int
    first_api_bytes: int
    first_requests: int
    all_bytes: int = 0
    all_requests: int = 0
    all_ms: float = 0.0


def is_api(url: str) -> bool:
    return "/api/v1/" in url


def open_context(browser: Any, token: str, width: int, height: int) -> Any:
    context = browser.new_context(viewport={"width": width, "height": height})
    context.add_init_script(f"localStorage.setItem({TOKEN_KEY!r}, {json.dumps(token)})")
    return context


def load_study_page(page: Any, url: str, *, scroll: bool) -> Load:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    traffic = Traffic()
    traffic.attach(cdp)
    page.goto(url, wait_until="commit")
    deadline = time.monotonic() + 60
    while not page.evaluate(PAINTED):  # (wait_for_function would eval(): the page's CSP says no)
        if time.monotonic() > deadline:
            raise RuntimeError("the leaderboard was not painted within 60 s")
        page.wait_for_timeout(20)
    paint = float(page.evaluate("performance.getEntriesByName('leaderboard-painted')[0].startTime"))
    traffic.wait_quiet(page)
    found = Load(
        paint_ms=paint,
        first_bytes=traffic.total(),
        first_api_bytes=traffic.total(is_api),
        first_requests=traffic.requests(),
    )
    if scroll:
        start = time.perf_counter()
        for section in ("Optimization history", "Hyperparameter importances"):
            page.get_by_role("heading", name=section).scroll_into_view_if_needed()
        page.get_by_role("list", name="Importances").locator("li").first.wait_for(timeout=120_000)
        traffic.wait_quiet(page)
        found.all_ms = (time.perf_counter() - start) * 1000
        found.all_bytes = traffic.total()
        found.all_requests = traffic.requests()
    cdp.detach()
    return found


#: The page without server paging: every trial fetched, then drawn as one table.
WHOLE_LIST_JS = """
async ([api, token]) => {
  const start = performance.now();
  const rows = [];
  let count = Infinity;
  for (let offset = 0; offset < count; offset += 500) {
    const r = await fetch(`${api}&limit=500&offset=${offset}`, {
      headers: {Authorization: `Bearer ${token}`}, cache: "no-store"});
    const page = await r.json();
    count = page.count;
    rows.push(...page.data);
  }
  const table = document.createElement("table");
  const body = document.createElement("tbody");
  for (const t of rows) {
    const tr = document.createElement("tr");
    for (const v of [t.number, t.state, t.objective, t.bestStep, t.lastStep,
                     JSON.stringify(t.params), t.durationSeconds]) {
      const td = document.createElement("td");
      td.textContent = String(v);
      tr.append(td);
    }
    body.append(tr);
  }
  table.append(body);
  document.body.replaceChildren(table);
  await new Promise((done) => requestAnimationFrame(() => setTimeout(done)));
  return [performance.now() - start, rows.length];
}
"""


def whole_list(browser: Any, base: str, token: str, study: str, width: int, height: int) -> Load:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.goto(f"{base}/healthz")
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    traffic = Traffic()
    traffic.attach(cdp)
    api = f"{base}/api/v1/studies/{study}/trials?sort=objective"
    elapsed, count = page.evaluate(WHOLE_LIST_JS, [api, token])
    traffic.wait_quiet(page, quiet_s=0.3)
    context.close()
    if count < 1:
        raise RuntimeError("the whole-list baseline read no trial")
    return Load(
        paint_ms=float(elapsed),
        first_bytes=traffic.total(),
        first_api_bytes=traffic.total(is_api),
        first_requests=traffic.requests(),
    )


def time_importances(base: str, token: str, study: str) -> tuple[float, float, int]:
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{base}/api/v1/studies/{study}/importances"
    with httpx.Client(headers=headers, timeout=600) as client:
        start = time.perf_counter()
        cold = client.get(url).raise_for_status().json()
        cold_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        warm = client.get(url).raise_for_status().json()
        warm_ms = (time.perf_counter() - start) * 1000
    if cold["cached"] or not warm["cached"]:
        raise RuntimeError(f"importances: cached {cold['cached']} then {warm['cached']}")
    return cold_ms, warm_ms, int(cold["trialCount"])


WATERFALL_JS = """() => performance.getEntriesByType("resource").map(
  (e) => [e.name, e.startTime, e.responseEnd, e.encodedBodySize])"""


def print_waterfall(page: Any) -> None:
    """When each request of the load started and ended (ms from navigation start)."""
    paint = page.evaluate("performance.getEntriesByName('leaderboard-painted')[0].startTime")
    for name, began, ended, size in page.evaluate(WATERFALL_JS):
        url = httpx.URL(name)
        path = url.path + (f"?{url.query.decode()}" if url.query else "")
        print(f"  {began:7.0f} {ended:7.0f} {size:>8} {path[:100]}", file=sys.stderr)
    rendered = page.evaluate("performance.getEntriesByName('leaderboard-rendered')[0].startTime")
    print(f"  leaderboard rendered at {rendered:.0f}, painted at {paint:.0f} ms", file=sys.stderr)


def cpu_pressure() -> str:
    """Linux's CPU pressure (the share of the last minute something waited for a CPU): other
    work on the machine slows both the page and the baseline."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return "n/a"
    fields = dict(part.split("=") for part in line.split()[1:])
    return f"{fields.get('avg60', '?')}%"


def kb(n: float) -> str:
    return f"{n / 1000:,.1f} kB"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get(
            "TUNER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=10, help="eval steps per trial")
    parser.add_argument("--repeats", type=int, default=5, help="cold loads of the study page")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument(
        "--chromium",
        default=os.environ.get("TUNER_TEST_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser"),
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--keep-db",
        type=Path,
        help="SQLite only: build the study into this file and keep it; reuse it when it exists "
        "(building 10,000 trials takes minutes)",
    )
    parser.add_argument(
        "--waterfall", action="store_true", help="print the first cold load's resource timings"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.chromium:
        print("no chromium: apt-get install chromium (or --chromium PATH)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    from playwright.sync_api import sync_playwright

    from bench import leaderboard as lb

    workdir = Path(tempfile.mkdtemp(prefix="tuner-web-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        if args.keep_db:
            url = f"sqlite:///{args.keep_db.resolve()}"
        else:
            url = stack.enter_context(lb.database(args.database, workdir, args.pg_admin_url))
        if not (args.keep_db and args.keep_db.exists()):
            trials = lb.synthesize(args.trials, args.steps, args.seed)
            start = time.perf_counter()
            lb.build_study(url, trials, optuna_batch=500, chunk=20_000)
            print(f"study built in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        env = lb.tuner_env(url, workdir)
        token = lb.create_read_token(env)
        base = stack.enter_context(lb.running_server(env, workdir / "server.log"))
        study = lb.STUDY
        importances = time_importances(base, token, study)
        page_url = f"{base}/#/studies/{study}"
        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=args.chromium, headless=True)
        stack.callback(browser.close)
        # One untimed load: the server's first answers (imports, connections) are not counted.
        context = open_context(browser, token, args.width, args.height)
        load_study_page(context.new_page(), page_url, scroll=False)
        context.close()
        cold: list[Load] = []
        baseline: list[Load] = []
        for index in range(args.repeats):
            context = open_context(browser, token, args.width, args.height)
            page = context.new_page()
            cold.append(load_study_page(page, page_url, scroll=index == 0))
            if index == 0 and args.waterfall:
                print_waterfall(page)
            if index == 0:  # the same context again: its cache holds the assets
                page.goto("about:blank")
                warm = load_study_page(page, page_url, scroll=False)
            context.close()
            baseline.append(whole_list(browser, base, token, study, args.width, args.height))
        version = browser.version
        load = os.getloadavg()[0]
        pressure = cpu_pressure()

    paints = [c.paint_ms for c in cold]
    first = cold[0]
    whole = [b.paint_ms for b in baseline]
    print(
        f"\n{args.trials:,} trials, {args.database}, Chromium {version} headless, viewport "
        f"{args.width}x{args.height}, {args.repeats} cold loads (fresh context each), "
        f"1-min load average {load:.2f}, CPU pressure (some, avg60) {pressure}\n"
    )
    rows = [
        ("first leaderboard paint, p50 / max", f"{median(paints):,.0f} / {max(paints):,.0f} ms"),
        (
            "first screen: bytes (requests)",
            f"{kb(first.first_bytes)} ({first.first_requests}), API {kb(first.first_api_bytes)}",
        ),
        (
            "whole page, every panel loaded",
            f"{kb(first.all_bytes)} ({first.all_requests}), {first.all_ms:,.0f} ms after scrolling",
        ),
        (
            "warm reload: paint, bytes",
            f"{warm.paint_ms:,.0f} ms, {kb(warm.first_bytes)} ({warm.first_requests})",
        ),
        (
            "baseline: every trial fetched + drawn, p50 / max",
            f"{median(whole):,.0f} / {max(whole):,.0f} ms, {kb(baseline[0].first_bytes)} "
            f"({baseline[0].first_requests} requests)",
        ),
        (
            "baseline / ours (time, bytes)",
            f"{median(whole) / median(paints):.1f}x, "
            f"{baseline[0].first_bytes / first.first_bytes:.0f}x",
        ),
        (
            f"importances (PED_ANOVA, {importances[2]:,} trials)",
            f"cold {importances[0]:,.0f} ms, cached {importances[1]:,.1f} ms",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    paint_ok = max(paints) < GOAL_PAINT_MS
    bytes_ok = first.first_bytes < GOAL_FIRST_SCREEN_BYTES
    print(
        f"\ngoals: first paint < {GOAL_PAINT_MS:.0f} ms: {'met' if paint_ok else 'MISSED'}; "
        f"first screen < {GOAL_FIRST_SCREEN_BYTES // 1000} kB: {'met' if bytes_ok else 'MISSED'}"
    )
    return 0 if paint_ok and bytes_ok else 1


if __name__ == "__main__":
    sys.exit(main())
