"""The page at `GET /` in a real headless browser (Debian's Chromium, driven by Playwright).

Upload a clip through the file picker, watch it internalize, ask a question, see the answer stream with
its time to first token; a screenshot goes to the test's output folder (`$V2L_TEST_OUTPUT` if set,
else pytest's `tmp_path`). Needs `/usr/bin/chromium` (Debian packages chromium and chromium-driver)
and the `playwright` Python package; its own browser download is not used.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("V2L_CHROMIUM", "/usr/bin/chromium")
# as root on a closed network: no sandbox, and no background connections that the machine would refuse
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium chromium-driver")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def test_the_page_uploads_watches_asks_and_streams(browser, tmp_path):
    pytest.importorskip("fastapi")
    from transformers_v2l.demo import load_default_hypernetwork
    from transformers_v2l.serving.process import ServerProcess
    from transformers_v2l.toy_world import make_clip, write_video

    clip = write_video(make_clip(2).frames, tmp_path / "clip.mp4")
    hn = load_default_hypernetwork()
    expected = hn.answer(hn.internalize(str(clip)), "What color is the circle?", max_new_tokens=64)
    with ServerProcess(["--store", str(tmp_path / "store"), "--api-key", "page-key"]) as server:
        page = browser.new_page(viewport={"width": 900, "height": 900})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url + "/")
        page.fill("#api-key", "page-key")
        page.dispatch_event("#api-key", "change")
        page.set_input_files("#file", str(clip))
        page.click("#upload")
        page.wait_for_function(
            "document.getElementById('status').textContent.startsWith('ready')", timeout=60_000
        )
        assert "frames" in page.inner_text("#metadata")
        assert page.input_value("#video-select").startswith("vid-")  # the new video is selected
        page.fill("#question", "What color is the circle?")
        page.click("#ask")
        page.wait_for_function("document.getElementById('answer').dataset.done", timeout=60_000)
        assert page.get_attribute("#answer", "data-done") == "true", page.inner_text("#answer")
        assert page.inner_text("#answer").strip() == expected
        assert page.inner_text("#ttft").endswith(" ms") and int(page.inner_text("#tokens")) > 0
        output = Path(os.environ.get("V2L_TEST_OUTPUT", tmp_path))
        output.mkdir(parents=True, exist_ok=True)
        shot = page.screenshot(path=str(output / "serve-page.png"), full_page=True)
        assert len(shot) > 10_000 and not errors, errors
        print(f"screenshot: {output / 'serve-page.png'}")
