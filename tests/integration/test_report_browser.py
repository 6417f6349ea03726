"""The HTML run report opened in a real headless Chromium (Debian's package; scripts/setup.sh installs it as root).

The report comes from the real code path: a scoring job (:func:`serving.batch.run_score_job`) with the trained
workspace's champion (tests/conftest.py) and economics with costs, half a year before its training as-of (drift),
its summary's population block, and a plan (:func:`serving.plan.make_plan`) on the list it wrote. The assertions
are the browser's: the DOM Chromium dumps after the page's load event (its check script wrote on ``<body>`` how many
images it decoded and how many network resources it loaded, and which section headings have a rendered box) and the
screenshot it takes (not blank: the header band's colour, pixel variance).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

AS_OF = "2024-06-30"
"""Half a year before the workspace model's training as-of (its drift reference): features have drifted."""
BROWSER_SECONDS = 120


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs Debian's package when run as root)")
    return path


def browse(browser: str, page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run on ``page`` (its own profile folder, no network: every host unresolvable)."""
    argv = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND", *args, page.as_uri()]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=BROWSER_SECONDS)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


class Dom(HTMLParser):
    """Start tags with attributes and the text of every ``<h2>`` of a dumped DOM."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.h2: list[str] = []
        self._in_h2 = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_h2 = tag == "h2"
        if self._in_h2:
            self.h2.append("")

    def handle_endtag(self, tag):
        self._in_h2 = self._in_h2 and tag != "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.h2[-1] += data

    def body(self) -> dict[str, str | None]:
        return next(attrs for tag, attrs in self.tags if tag == "body")


@pytest.fixture(scope="module")
def report(workspace, tmp_path_factory) -> tuple[Path, str]:
    """A score run's report with its plan, written where the command line writes it (beside the output)."""
    from serving.batch import run_score_job
    from serving.economics import Economics, Offer
    from serving.loader import load_model
    from serving.plan import make_plan
    from serving.report import write_run_report

    with pytest.MonkeyPatch.context() as patch:
        for name, value in workspace.env.items():
            patch.setenv(name, value)
        model = load_model("models:/retention@champion")
    folder = tmp_path_factory.mktemp("report")
    out = folder / "list.parquet"
    economics = Economics(cost_to_serve_per_order=6.0, cost_per_refund=5.0, contact_cost=1.0)
    summary = run_score_job(str(workspace.transactions), AS_OF, str(out), model, reasons="none", economics=economics)
    data = summary.to_dict()
    population = data["population"]
    assert all(t["customers"] for t in population["tiers"]) and population["unprofitable"]["customers"] > 0
    assert data["drift_warnings"]  # scored half a year before the training as-of: the population has moved
    offers = [Offer("email", save_rate=0.1), Offer("call", fixed_cost=8.0, save_rate=0.3)]
    plan = make_plan(pd.read_parquet(out), offers, 500.0, economics, meta=model.meta).to_dict()
    assert plan["totals"]["customers_contacted"] > 0
    html, path = write_run_report(data, str(out), plan=plan)  # what the command line does
    assert path == folder / "list.report.html"
    return path, html


def test_the_browser_renders_every_section_decodes_every_image_and_fetches_nothing(report, tmp_path) -> None:
    from serving.report import SECTION_HEADINGS

    path, source = report
    dom_text = browse(chromium(), path, tmp_path / "profile", "--virtual-time-budget=3000", "--dump-dom").stdout
    dom = Dom(dom_text)
    assert dom.h2 == list(SECTION_HEADINGS.values())
    body = dom.body()
    images = len(re.findall(r"<img ", source))
    assert images == 3  # value pyramid, Pareto + profit curves, budget curve
    assert body.get("data-images-total") == str(images), "the check script did not run"
    assert body.get("data-images-decoded") == str(images)  # each decoded (naturalWidth > 0) and laid out
    assert body.get("data-external-requests") == "0"
    assert json.loads(body["data-headings"]) == list(SECTION_HEADINGS.values())  # each with a box of its own
    assert not re.search(r"(https?|ftp|wss?)://", dom_text)  # no URL in the page the browser built either


def test_the_screenshot_shows_a_styled_page(report, tmp_path) -> None:
    from PIL import Image

    path, _ = report
    shot = tmp_path / "report.png"
    browse(chromium(), path, tmp_path / "profile", "--window-size=1280,2400", f"--screenshot={shot}")
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape == (2400, 1280, 3)
    assert pixels.std() > 20  # not a blank page
    header = np.median(pixels[2:16].reshape(-1, 3), axis=0)  # the header's top padding, above its title
    np.testing.assert_allclose(header, (0x23, 0x39, 0x5D), atol=3)  # the inline CSS applied: the header band
    coloured = (np.abs(pixels - pixels.mean(axis=2, keepdims=True)).max(axis=2) > 40).mean()
    assert coloured > 0.02  # the charts' and the matrix's colours, not only text


def test_the_check_sees_a_broken_image_and_a_url_whose_fetch_the_policy_blocks(report, tmp_path) -> None:
    """The instrument itself: a report with one image's data destroyed and an image from a local HTTP server added
    is reported as such by the page's check script, and the server is never asked (Content-Security-Policy)."""
    import http.server
    import threading

    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    _, source = report
    first = re.search(r'src="data:image/png;base64,([^"]+)"', source)
    assert first is not None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/x.png"
        page = tmp_path / "tampered.html"
        page.write_text(
            source.replace(first.group(1), "AAAA", 1).replace("</main>", f'<img alt="x" src="{url}"></main>')
        )
        body = Dom(browse(chromium(), page, tmp_path / "profile", "--virtual-time-budget=3000", "--dump-dom").stdout)
        server.shutdown()
    assert body.body().get("data-images-total") == "4"
    assert body.body().get("data-images-decoded") == "2"  # neither the destroyed one nor the remote one
    assert body.body().get("data-external-requests") == "1"  # the attempt is seen ...
    assert hits == []  # ... and blocked: the server was never asked
