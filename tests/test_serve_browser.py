"""The page in a real headless Chromium (Playwright): submit a prompt, watch it finish, play the video,
on either job store (SQLite, and a real PostgreSQL server started for the test); and with a model that
takes an image and a motion level (tiny Kandinsky Video 1.1), upload an image and pick a level.

Skips when Playwright or a Chromium binary is missing (fails in CI). Set ``FUSIONFRAMES_CHROMIUM`` to a
browser binary to choose one; ``FUSIONFRAMES_SCREENSHOT=1`` also writes docs/images/serve.png.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pgserver import PostgresServer, find_bindir
from PIL import Image
from test_serve import TOKEN, ServerProcess
from test_serve_kv11 import make_kv11_model

pytestmark = pytest.mark.slow  # a browser and server processes: about a minute here

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "serve.png"
PROMPT = 'a red circle moving right <img src=x onerror="alert(1)">'


def chromium_binary() -> str | None:
    """A system Chromium if there is one; None lets Playwright use its own download."""
    if os.environ.get("FUSIONFRAMES_CHROMIUM"):
        return os.environ["FUSIONFRAMES_CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def missing(reason: str) -> None:
    """Skip on a developer's machine without a browser; in CI (``.ci/run`` installs Debian's
    chromium and Playwright) a missing browser is a failure, so the test cannot silently skip."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run should have installed it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright import sync_api
    except ImportError:
        missing("playwright is not installed (pip install -e '.[test]')")
    with sync_api.sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=chromium_binary(), args=["--no-sandbox"])
        except Exception as error:  # no bundled browser and none on PATH
            missing(f"no Chromium for Playwright ({str(error).splitlines()[0]})")
        yield launched
        launched.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def page_server(
    request: pytest.FixtureRequest, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The page's server on each job store: the default SQLite one, and PostgreSQL (the multi-host
    store) with the same local worker."""
    data = tmp_path_factory.mktemp("browser") / "data"
    postgres = None
    options: tuple[str, ...] = ()
    if request.param == "postgresql":
        bindir = find_bindir()
        if bindir is None:
            missing("no PostgreSQL server binaries (initdb, pg_ctl); .ci/run installs Debian's postgresql")
        postgres = PostgresServer(bindir).init().start()
        options = ("--store", postgres.url, "--artifacts", str(data.parent / "artifacts"))
    proc = ServerProcess(tiny_model_dir, data, *options, token=TOKEN).start()
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()
        if postgres is not None:
            postgres.destroy()


@pytest.fixture(scope="module")
def kv11_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("browser11")
    proc = ServerProcess(make_kv11_model(root), root / "data", token=TOKEN).start()
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def poll(page: Any, expression: str, timeout: float = 90.0) -> Any:
    """``page.wait_for_function`` evaluates strings with eval, which the page's CSP forbids."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {expression}")


def test_page_submits_plays_and_escapes(browser: Any, page_server: ServerProcess) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))

    page.goto(f"{page_server.url}/?token={TOKEN}")
    page.wait_for_selector('#server-status[data-status="ok"]', timeout=30_000)
    assert "token=" not in page.url  # taken out of the address bar
    poll(page, "!document.querySelector('#inputs-note').hidden")  # this model: no image, no motion level
    assert "image-to-video" in page.text_content("#inputs-note")
    assert not page.is_visible("#image") and not page.is_visible("#motion_level")

    page.fill("#prompt", PROMPT)
    page.fill("#steps", "2")
    page.fill("#seed", "5")
    page.select_option("#fps", "medium")
    page.click("#submit")
    page.wait_for_selector("#queue li", timeout=10_000)

    poll(page, "document.querySelector('#player').dataset.job")
    poll(page, "document.querySelector('#player').readyState >= 2")
    job_id = page.evaluate("document.querySelector('#player').dataset.job")
    with page_server.client() as client:
        result = client.get(f"/api/jobs/{job_id}").json()["result"]
    duration = page.evaluate("document.querySelector('#player').duration")
    assert duration == pytest.approx(result["num_frames"] / result["fps"], abs=0.05)
    assert page.evaluate("document.querySelector('#player').videoWidth") == 64
    assert PROMPT in page.text_content("#player-caption")

    page.wait_for_selector(f'#gallery .card[data-job="{job_id}"]')
    assert PROMPT == page.text_content(f'#gallery .card[data-job="{job_id}"] .prompt')
    assert page.locator("main img").count() == 0  # the prompt's <img> stayed text
    assert page.get_attribute("#download", "href").startswith(f"/api/jobs/{job_id}/video")

    if os.environ.get("FUSIONFRAMES_SCREENSHOT") == "1":
        take_screenshot(page)
    assert not problems, problems
    context.close()


def take_screenshot(page: Any) -> None:
    """The docs picture: a finished video, a second one, and a job in progress in the queue."""
    page.fill("#prompt", "a blue square moving left on a white background")
    page.fill("#seed", "8")
    page.click("#submit")
    poll(page, "document.querySelectorAll('#gallery .card').length >= 2")
    page.fill("#prompt", "two stars, a green one falling and a yellow one rising")
    page.fill("#steps", "400")
    page.click("#submit")
    poll(page, "[...document.querySelectorAll('#queue progress')].some(p => p.value > 0.02)")
    page.evaluate("document.querySelector('#player').pause()")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.click("#queue button")  # cancel the long job


def test_page_uploads_an_image_and_a_motion_level(
    browser: Any, kv11_server: ServerProcess, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    first = tmp_path / "first.png"
    Image.new("RGB", (64, 64), (30, 200, 30)).save(first)

    page.goto(f"{kv11_server.url}/?token={TOKEN}")
    page.wait_for_selector('#server-status[data-status="ok"]', timeout=30_000)
    poll(page, "!document.querySelector('[data-input=image]').hidden")
    assert page.is_visible("#image") and page.is_visible("#motion_level")
    assert page.is_hidden("#inputs-note")
    assert page.is_disabled("#mode option[value=animate]")  # no animation path for this pipeline
    page.fill("#prompt", "a green square")
    page.fill("#steps", "2")
    page.fill("#seed", "7")
    page.set_input_files("#image", str(first))
    page.select_option("#motion_level", "extreme")
    page.click("#submit")
    poll(page, "document.querySelector('#player').dataset.job")
    job_id = page.evaluate("document.querySelector('#player').dataset.job")
    with kv11_server.client() as client:
        job = client.get(f"/api/jobs/{job_id}").json()
        assert job["status"] == "done"
        assert job["settings"]["image_to_video"] is True and job["settings"]["motion"] == "extreme"
        assert client.get(f"/api/jobs/{job_id}/image").content == first.read_bytes()

    page.click(f'#gallery .card[data-job="{job_id}"] button[title="same settings and seed"]')  # re-run
    poll(page, f"[...document.querySelectorAll('#gallery .card')].some(c => c.dataset.job !== '{job_id}')")
    with kv11_server.client() as client:
        jobs = client.get("/api/jobs").json()["jobs"]
        again = next(j for j in jobs if j["id"] != job_id)
        assert again["request"]["image"] == job["request"]["image"]  # the same image, fetched back
    assert not problems, problems
    context.close()
