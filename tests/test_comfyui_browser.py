"""The pack as a user sees it: the real headless ComfyUI (tests/test_comfyui_headless.py's server) opened
in a real headless Chromium (Debian's ``chromium``, driven by Playwright for Python through
``executable_path``; no browser is downloaded). Every example workflow and a workflow saved with the
legacy nodes is loaded through the frontend with no missing-node dialog and no node in error; the
template browser finds every thumbnail; the embedded-demo workflow is queued from the page (at test
size) and its video appears on the Save Video node. Screenshots go to ECHOMIMIC_SCREENSHOT_DIR (default:
the test's temporary folder)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from support.paths import REPO
from support.server import LENGTH, SIZE, STEPS, _get, comfy  # noqa: F401 (the server fixture)
from support.workflows import NAMES

pytestmark = [pytest.mark.comfyui, pytest.mark.slow, pytest.mark.browser]

LEGACY = sorted((REPO / "tests" / "workflows_legacy").glob("*.json"))
PACK_NAME = "ComfyUI-EchoMimicV2"


def chromium_path() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install playwright; .ci/run does)")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no chromium executable (apt-get install chromium; .ci/run does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    out = Path(os.environ.get("ECHOMIMIC_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def page(browser, comfy):
    import urllib.request

    url = comfy["COMFYUI_URL"]
    # a returning user: no first-run template dialog over the canvas
    req = urllib.request.Request(url + "/settings/Comfy.TutorialCompleted", data=b"true", method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).close()
    context = browser.new_context(viewport={"width": 1600, "height": 900})
    pg = context.new_page()
    pg.failed = []  # (status, url) of every failed request to the server
    pg.on("response", lambda r: pg.failed.append((r.status, r.url)) if r.status >= 400 else None)
    pg.console_errors = []
    pg.on("console", lambda m: pg.console_errors.append(m.text) if m.type == "error" else None)
    pg.goto(url, wait_until="domcontentloaded")
    pg.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=120_000)
    pg.wait_for_timeout(1500)
    pg.keyboard.press("Escape")
    yield pg
    context.close()


def load_in_editor(page, ui: dict) -> dict:
    """app.loadGraphData like a dropped file; returns what the page reports about the graph."""
    page.evaluate("async (g) => { await window.app.loadGraphData(g); }", ui)
    page.wait_for_timeout(800)
    return page.evaluate("""() => {
        const nodes = window.app.graph._nodes;
        return {
          count: nodes.length,
          unknown: nodes.filter(n => !window.LiteGraph.registered_node_types[n.type]).map(n => n.type),
          errors: nodes.filter(n => n.has_errors).map(n => n.type),
          missingDialog: document.body.innerText.includes("Some Nodes Are Missing"),
        };
    }""")


def close_dialogs(page):
    for _ in range(3):
        page.keyboard.press("Escape")
    page.wait_for_timeout(200)


@pytest.mark.parametrize("name", NAMES)
def test_example_workflow_loads_in_the_editor(page, shots, name):
    ui = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    state = load_in_editor(page, ui)
    page.screenshot(path=str(shots / f"{name}.png"))
    assert state["count"] == len(ui["nodes"])
    assert not state["unknown"] and not state["errors"], state
    assert not state["missingDialog"], "the frontend showed its missing-nodes dialog"
    close_dialogs(page)


@pytest.mark.parametrize("path", LEGACY, ids=[p.stem for p in LEGACY])
def test_workflow_saved_with_the_legacy_nodes_loads(page, shots, path):
    ui = json.loads(path.read_text())
    state = load_in_editor(page, ui)
    page.screenshot(path=str(shots / f"legacy_{path.stem}.png"))
    assert not state["unknown"] and not state["errors"] and not state["missingDialog"], state
    close_dialogs(page)


def test_template_browser_finds_every_thumbnail(page, shots):
    page.failed.clear()
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.wait_for_timeout(1500)
    tab = page.get_by_text(PACK_NAME, exact=False).first
    if tab.count():
        tab.click()
        page.wait_for_timeout(1500)
    page.screenshot(path=str(shots / "template_browser.png"))
    close_dialogs(page)
    ours = [(s, u) for s, u in page.failed if "workflow_templates" in u]
    assert not ours, ours
    for name in NAMES:  # the files the browser asks for
        with __import__("urllib.request").request.urlopen(
                f"{page.url.rstrip('/')}/api/workflow_templates/{PACK_NAME}/{name}.jpg") as r:
            assert r.status == 200


def test_embedded_demo_is_queued_from_the_page_and_its_video_appears(page, shots, comfy):
    ui = json.loads((REPO / "example_workflows" / "echomimic_v2_embedded_demo.json").read_text())
    state = load_in_editor(page, ui)
    assert not state["unknown"] and not state["missingDialog"], state
    # test size, set through the node's widgets as a user would
    page.evaluate("""([steps, length]) => {
        const s = window.app.graph._nodes.find(n => n.type === "EchoMimicV2Sampler");
        for (const w of s.widgets) {
            if (w.name === "steps") w.value = steps;
            if (w.name === "length") w.value = length;
        }
    }""", [STEPS, LENGTH])
    before = set(_get(comfy["COMFYUI_URL"] + "/history"))
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    deadline = time.time() + float(os.environ.get("ECHOMIMIC_COMFYUI_RUN_TIMEOUT", 600))
    entry = None
    while time.time() < deadline:
        new = {k: v for k, v in _get(comfy["COMFYUI_URL"] + "/history").items() if k not in before}
        done = [v for v in new.values() if v.get("status", {}).get("completed")
                or v.get("status", {}).get("status_str") == "error"]
        if done:
            entry = done[0]
            break
        time.sleep(1)
    assert entry is not None, "the queued prompt did not finish"
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:2000]
    videos = [i for out in entry["outputs"].values() for i in out.get("images", []) if i["filename"].endswith(".mp4")]
    assert len(videos) == 1
    # the Save Video node previews the file in the page
    page.wait_for_function("(f) => [...document.querySelectorAll('video')].some(v => (v.src || '').includes(f))",
                           arg=videos[0]["filename"], timeout=60_000)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(shots / "embedded_demo_after_run.png"))
    errors = page.evaluate("() => window.app.graph._nodes.filter(n => n.has_errors).map(n => n.type)")
    assert not errors
    assert (comfy["rt"] / "output" / videos[0]["subfolder"] / videos[0]["filename"]).is_file()
    assert SIZE == 64  # the demo model's size; the saved workflow already uses it
