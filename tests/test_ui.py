"""`nnps ui` in a real browser: Debian's headless Chromium, driven by Selenium, against the
page served by a real `nnps ui` process while a real `nnps train` writes the run.

Screenshots go to test-artifacts/ui/ in the checkout (kept after the run, not committed).
`make test` installs Chromium and its driver; where they are missing (a machine set up
by hand) the browser test says so and skips, and CI fails it instead of skipping.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from tests.conftest import MNIST_10K, REPO

ARTIFACTS = REPO / "test-artifacts" / "ui"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def nnps(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nnps.cli.main", *args], text=True, **kwargs)


def serve(*runs: str) -> tuple[subprocess.Popen, str]:
    """`nnps ui RUN...` on a free port; (its process, its URL from its first line)."""
    p = nnps("ui", *runs, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = p.stdout.readline()  # type: ignore[union-attr]
    assert line.startswith("nnps ui: http://127.0.0.1:"), line + p.stderr.read()  # type: ignore[union-attr]
    return p, line.split()[2]


@pytest.fixture
def browser() -> Iterator:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} missing: make test installs chromium and chromium-driver")
        pytest.skip(f"{CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1100"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(condition, timeout: float = 60.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def draw_seven(browser, pad, scale: float, offset: tuple[int, int]) -> tuple[list, list, str, list]:
    """Clear the pad, draw a 7 of this scale (1.0: about 150x170 of the pad's 280x280) around
    offset from the pad's centre; (pixels sent, pixels the network saw, prediction, outputs)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "clear").click()
    s, (dx, dy) = scale, offset
    ActionChains(browser).move_to_element_with_offset(pad, int(dx - 75 * s), int(dy - 90 * s)).click_and_hold() \
        .move_by_offset(int(150 * s), 0).move_by_offset(int(-60 * s), int(90 * s)) \
        .move_by_offset(int(-30 * s), int(80 * s)).release().perform()  # fmt: skip
    # the last prediction is of the whole stroke (earlier ones came while it was drawn)
    wait_for(lambda: browser.execute_script("return JSON.stringify(window.nnpsLastPixels) === "
                                            "JSON.stringify(pixels())"), what="the stroke's prediction")  # fmt: skip
    sent = browser.execute_script("return window.nnpsLastPixels")
    seen = browser.execute_script("return window.nnpsSeen")
    outputs = [float(b.text.split()[-1]) for b in browser.find_elements(By.CSS_SELECTOR, "#outputs .bar")]
    return sent, seen, browser.find_element(By.ID, "prediction").text, outputs


def overlap(a: list, b: list) -> float:
    """Cosine similarity of two images' pixels: 1 for the same ink in the same place."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def test_page_follows_a_run_draws_and_predicts_as_nnps_predict(browser, tmp_path: Path) -> None:
    run = tmp_path / "seed"
    trainer = nnps("train", "--data", str(MNIST_10K), "--hidden", "100", "--batch-size", "10", "--lr", "3.0",
                   "--epochs", "20", "--workers", "0", "--snapshot-weights", "--log-progress", "--run-dir", str(run),
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    other = tmp_path / "other"  # a second run to switch to: no W^1 snapshots, one hidden layer of 20
    assert nnps("train", "--data", str(MNIST_10K), "--hidden", "20", "--steps", "300", "--workers", "0",
                "--run-dir", str(other), stdout=subprocess.DEVNULL).wait(timeout=300) == 0  # fmt: skip
    server, url = serve(str(run), str(other))
    try:
        from selenium.webdriver.common.by import By

        wait_for(lambda: (run / "metrics.jsonl").exists(), what="the run's first epoch")
        browser.get(url)
        rows = lambda: int(browser.find_element(By.ID, "rows").text or 0)  # noqa: E731
        first = wait_for(rows, what="the first point of the curve")
        assert trainer.poll() is None, "the run ended before the page saw it train"
        wait_for(lambda: rows() > first, what="the curve to grow")  # polled while the run trains
        browser.save_screenshot(str(ARTIFACTS / "curves-growing.png"))
        assert trainer.wait(timeout=300) == 0
        wait_for(lambda: rows() == 20, what="all 20 epochs")
        assert "workers 0" in browser.find_element(By.ID, "run-info").text

        # the weights: the slider runs over the snapshots, epoch 0 (the start) to 20
        slider = browser.find_element(By.ID, "epoch-slider")
        wait_for(lambda: slider.get_attribute("max") == "20", what="the last snapshot")
        browser.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'))", slider)
        img = browser.find_element(By.ID, "weights")
        wait_for(lambda: img.get_attribute("src").endswith("/weights/0.png") and
                 browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img),
                 what="epoch 0's weights")  # fmt: skip
        assert browser.find_element(By.ID, "epoch").text == "0"
        browser.save_screenshot(str(ARTIFACTS / "weights-epoch-0.png"))

        # a 7 drawn on the pad: the page's answer is `nnps predict`'s for the same pixels as an image file
        pad = browser.find_element(By.ID, "pad")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", pad)
        time.sleep(0.5)  # the page settles (images above the pad have loaded)
        sent, seen, shown, outputs = draw_seven(browser, pad, 1.0, (0, 0))
        browser.save_screenshot(str(ARTIFACTS / "canvas-prediction.png"))
        assert len(sent) == 112 * 112 and len(seen) == 784 and len(outputs) == 10
        pgm = tmp_path / "drawn.pgm"
        pgm.write_bytes(b"P5 112 112 255\n" + bytes(sent))
        out = subprocess.run([sys.executable, "-m", "nnps.cli.main", "predict", str(run / "final.npz"), str(pgm),
                              "--json"], capture_output=True, text=True, check=True)  # fmt: skip
        predicted = json.loads(out.stdout)[0]
        assert shown == str(predicted["prediction"]) == "7"
        assert outputs == pytest.approx([round(v, 3) for v in predicted["activations"]], abs=1e-3)
        labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#activations .layer-name")]
        assert labels == ["a1 (100)", "a2 output (10)"]
        # smaller and off-centre: the network sees about the same 28x28 digit, and says 7
        for scale, offset, name in ((0.5, (-70, -70), "small-top-left"), (0.6, (60, 50), "small-bottom-right")):
            raw, sees, says, _ = draw_seven(browser, pad, scale, offset)
            browser.save_screenshot(str(ARTIFACTS / f"canvas-{name}.png"))
            assert overlap(raw, sent) < 0.5  # drawn elsewhere on the pad...
            assert overlap(sees, seen) > 0.6, name  # ...seen where the first was
            assert says == "7", name

        # the confusion matrix, and one cell's images
        cell = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#confusion td[data-true='7'][data-pred='7']"),
                        what="the confusion matrix")  # fmt: skip
        cell[0].click()
        shot = browser.find_element(By.ID, "cell")
        wait_for(lambda: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", shot),
                 what="the cell's images")  # fmt: skip
        wait_for(lambda: browser.find_element(By.ID, "confusion-note").text.startswith("final.npz: test accuracy "),
                 what="the final checkpoint's confusion")  # fmt: skip
        browser.execute_script("arguments[0].scrollIntoView({block: 'end'})", shot)
        browser.save_screenshot(str(ARTIFACTS / "confusion-cell.png"))
        assert browser.find_element(By.ID, "error").text == ""

        # the other run: nothing of the first stays (its W^1, its cell's images, its answer for the drawing)
        browser.find_elements(By.CSS_SELECTOR, "#runs li")[1].click()
        wait_for(lambda: browser.find_element(By.ID, "run-name").text == "other", what="the other run")
        for image in ("weights", "cell"):
            assert browser.find_element(By.ID, image).get_attribute("src") in (None, ""), image
        wait_for(lambda: browser.find_element(By.ID, "weights-note").text.startswith("no W^1 snapshots"),
                 what="the other run's note on W^1")  # fmt: skip
        wait_for(lambda: [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#activations .layer-name")] ==
                 ["a1 (20)", "a2 output (10)"], what="the drawing's activations in the other run")  # fmt: skip
        mine = json.loads(subprocess.run([sys.executable, "-m", "nnps.cli.main", "evaluate", str(other), "--json"],
                                         capture_output=True, text=True, check=True).stdout)  # fmt: skip
        wait_for(lambda: browser.find_element(By.ID, "confusion-note").text ==
                 f"final.npz: test accuracy {100 * mine['accuracy']:.2f}%", what="the other run's confusion")  # fmt: skip
        browser.save_screenshot(str(ARTIFACTS / "switched-run.png"))
        assert browser.find_element(By.ID, "error").text == ""
    finally:
        trainer.kill()
        trainer.communicate(timeout=30)
        server.terminate()
        server.communicate(timeout=30)


def table_outputs(final: Path, x: np.ndarray, hidden: str) -> np.ndarray:
    """a^L in float64 from the checkpoint's arrays, for standardized rows: hidden s(W a + b), then the output."""
    with np.load(final) as z:
        ws, bs = [z["w1"], z["w2"]], [z["b1"], z["b2"]]
        regression = json.loads(str(z["meta"]))["output"] == "linear"
    act = {"sigmoid": lambda v: 1 / (1 + np.exp(-v)), "tanh": np.tanh}
    a = act[hidden](x.astype(np.float64) @ ws[0].T + bs[0])
    z2 = a @ ws[1].T + bs[1]
    return z2 if regression else act["sigmoid"](z2)


def test_page_shows_a_table_run_with_a_row_form(browser, tmp_path: Path) -> None:
    """A classifier trained on a table: the page shows a form of its features instead of the pad,
    filled from a test row, and its answer is the network's for that row; a regression's test
    rows are drawn predicted against true, in the target's units."""
    from selenium.webdriver.common.by import By

    from nnps.core import table_rows
    from nnps.core.config import TrainConfig

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)) * [1, 10, 100]
    kind = np.where(x[:, 0] + x[:, 1] / 10 > 0, "up", "down")
    (tmp_path / "t.csv").write_text("a,b,c,kind,score\n" + "".join(
        f"{r[0]},{r[1]},{r[2]},{k},{r[0] * 3 + r[1] / 5}\n" for r, k in zip(x, kind)))
    common = ["--data", str(tmp_path / "t.csv"), "--features", "a,b,c", "--hidden", "8", "--epochs", "8", "--workers", "0"]
    assert nnps("train", *common, "--label", "kind", "--lr", "1.0", "--run-dir", str(tmp_path / "kinds"),
                stdout=subprocess.DEVNULL).wait(timeout=300) == 0  # fmt: skip
    assert nnps("train", *common, "--task", "regress", "--label", "score", "--activation", "tanh", "--optimizer",
                "adam", "--lr", "0.01", "--run-dir", str(tmp_path / "scores"), stdout=subprocess.DEVNULL).wait(
        timeout=300) == 0  # fmt: skip
    server, url = serve(str(tmp_path / "kinds"), str(tmp_path / "scores"))
    try:
        browser.get(url)
        text = lambda i: browser.find_element(By.ID, i).text  # noqa: E731
        wait_for(lambda: text("row-truth").startswith("true: "), what="test row 0 in the form")
        assert not browser.find_element(By.ID, "row-panel").get_attribute("hidden")
        assert browser.find_element(By.CSS_SELECTOR, "figure.draw").get_attribute("hidden") is not None
        assert text("run-info").startswith("network 3-8-2")
        index = browser.find_element(By.ID, "row-index")
        index.clear()
        index.send_keys("5")
        browser.find_element(By.ID, "row-load").click()
        config = TrainConfig.from_dict(json.loads((tmp_path / "kinds" / "config.json").read_text()))
        ds = table_rows.load(config)
        names = ["down", "up"]
        wait_for(lambda: text("row-truth") == f"true: {names[ds.y_test[5]]}", what="test row 5")
        expected = names[int(table_outputs(tmp_path / "kinds" / "final.npz", ds.x_test[5:6], "sigmoid")[0].argmax())]
        wait_for(lambda: text("row-prediction") == expected, what="the answer for test row 5")
        browser.save_screenshot(str(ARTIFACTS / "table-row.png"))
        # a value changed by hand: the answer follows
        box = browser.find_elements(By.CSS_SELECTOR, "#row-form input")[0]
        box.clear()
        box.send_keys("-50")
        browser.find_element(By.ID, "row-predict").click()
        wait_for(lambda: text("row-prediction") == "down", what="a row far on the down side")
        # the regression: its test rows predicted against true, in the score's units
        browser.find_elements(By.CSS_SELECTOR, "#runs li")[1].click()
        scatter = wait_for(lambda: browser.execute_script("return window.nnpsScatter"), what="the scatter")
        from sklearn.preprocessing import StandardScaler

        assert scatter["targets"] == ["score"] and len(scatter["true"][0]) == 60  # 20% of 300 rows
        score = x[:, 0] * 3 + x[:, 1] / 5  # what the CSV holds
        test = [int(np.flatnonzero(np.isclose(score, v, rtol=1e-6, atol=0))[0]) for v in scatter["true"][0]]
        train = np.setdiff1d(np.arange(300), test)
        xs, ys = StandardScaler().fit(x[train]), StandardScaler().fit(score[train, None])
        predicted = ys.inverse_transform(table_outputs(tmp_path / "scores" / "final.npz", xs.transform(x[test]), "tanh"))
        assert np.allclose(scatter["predicted"][0], predicted[:, 0], rtol=1e-4)
        assert text("confusion-note").startswith("final.npz: test R^2 0.")
        browser.save_screenshot(str(ARTIFACTS / "table-regression.png"))
        assert text("error") == ""
    finally:
        server.terminate()
        server.communicate(timeout=30)


def request(url: str, data: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_bad_requests_get_an_error_and_the_next_is_served(tiny_npz: Path, tmp_path: Path) -> None:
    good, broken, linked = tmp_path / "good", tmp_path / "broken", tmp_path / "linked"
    for rd in (good, broken, linked):
        subprocess.run([sys.executable, "-m", "nnps.cli.main", "train", "--data", str(tiny_npz), "--epochs", "1",
                        "--workers", "0", "--run-dir", str(rd)], check=True, capture_output=True)  # fmt: skip
    (broken / "final.npz").write_bytes(b"not a checkpoint")
    secret = tmp_path / "elsewhere.jsonl"  # a file outside the runs, reached by a link inside one
    secret.write_text('{"epoch": 1, "secret": "s3cr3t"}\n')
    (linked / "metrics.jsonl").unlink()
    (linked / "metrics.jsonl").symlink_to(secret)
    server, url = serve(str(good), str(broken), str(linked))
    try:
        api = url + "api/runs"
        assert request(api)[0] == 200
        pixels = json.dumps({"pixels": [0] * 36}).encode()
        cases = [
            (f"{api}/7", None, 404, "no run '7': this page serves runs 0..2"),
            (f"{api}/1/predict", pixels, 422, f"{broken / 'final.npz'}: not a readable checkpoint"),
            (f"{api}/0/predict", b"{not json", 400, "the body is not JSON"),
            (f"{api}/0/predict", json.dumps({"pixels": [300] * 36}).encode(), 400, "pixels must be numbers 0-255"),
            (f"{api}/0/predict", json.dumps({"pixels": [0] * 5}).encode(), 400, "5 pixels: not a square image"),
            (f"{api}/0/predict", json.dumps({"pixels": [0] * 100_000}).encode(), 413, "Request Entity Too Large"),
            (f"{api}/0/weights/3.png", None, 404, f"{good}: no W^1 snapshot for epoch 3"),
            (f"{api}/0/confusion/3/99.png", None, 404, "no cell (3, 99): classes are 0..9"),
            (f"{api}/0/predict", b"[" * 30_000 + b"]" * 30_000, 400, "the body nests too deeply to be a request"),
            (f"{api}/2/metrics", None, 422, f"{linked / 'metrics.jsonl'}: a link out of the run directory; not read"),
            (f"{api}/2", None, 422, f"{linked / 'metrics.jsonl'}: a link out of the run directory; not read"),
        ]
        for where, body, status, message in cases:
            got = request(where, body)
            assert got[0] == status and got[1]["error"].startswith(message), (where, got)
            assert "s3cr3t" not in json.dumps(got[1])
            assert request(api) == (200, [{"id": 0, "name": "good", "uri": str(good), "job": None},
                                          {"id": 1, "name": "broken", "uri": str(broken), "job": None},
                                          {"id": 2, "name": "linked", "uri": str(linked), "job": None}])  # fmt: skip
        status, answer = request(f"{api}/0/predict", pixels)
        assert status == 200 and len(answer["outputs"]) == 10 and answer["checkpoint"] == "final.npz"
        assert answer["prediction"] == int(np.argmax(answer["outputs"]))
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_ui_needs_a_run_and_warns_off_loopback(tiny_npz: Path, tmp_path: Path, capsys) -> None:
    from tests.test_cli import run_main

    assert run_main(["ui"], capsys)[::2] == (1, "error: give one or more RUN_DIRs, or --address of a Ray dashboard "
                                                "with nnps jobs\n")  # fmt: skip
    assert run_main(["ui", "x", "--port", "70000"], capsys)[::2] == (1, "error: --port must be 0-65535, got 70000\n")
    # another address than 127.0.0.1 only when asked, and with a warning (127.0.0.2: still this machine)
    p = nnps("ui", str(tmp_path), "--host", "127.0.0.2", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline().startswith("nnps ui: http://127.0.0.2:")  # type: ignore[union-attr]
    finally:
        p.terminate()
        _, err = p.communicate(timeout=30)
    assert err.startswith("warning: serving on 127.0.0.2: anyone who can reach this address can read these runs\n")
