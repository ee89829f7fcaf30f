"""The snapshots page (`/dashboard`) in a real headless Chromium driven by Selenium: create with a
moving progress bar, download and check SHA-256, recover into a new collection, delete, a bad
upload's error, the read-only key's view, and screenshots at desktop and phone sizes."""
import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from gate import Gate
from test_s3 import s3_env

SHOTS = Path(__file__).resolve().parents[2] / "target" / "dashboard"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path):
    # No skip: a missing browser fails the test (`make test` installs it).
    assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), \
        "Debian's chromium and chromium-driver are required (make browser)"
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
                 "--window-size=1280,800"):
        opts.add_argument(flag)
    opts.add_experimental_option("prefs", {
        "download.default_directory": str(downloads),
        "download.prompt_for_download": False,
        "safebrowsing.enabled": False,
    })
    driver = webdriver.Chrome(service=DriverService(executable_path=CHROMEDRIVER), options=opts)
    driver.downloads = downloads
    yield driver
    driver.quit()


def wait(driver, cond, timeout=60):
    # The page re-renders its lists after each action: an element found mid-render is stale.
    return WebDriverWait(driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=[NoSuchElementException, StaleElementReferenceException]).until(cond)


def card(driver, name):
    return driver.find_element(By.CSS_SELECTOR, f'article.collection[data-collection="{name}"]')


def rows(driver, name):
    return card(driver, name).find_elements(By.CSS_SELECTOR, "tr[data-snapshot]")


def fill_big(server, name, n=50_000, dim=768):
    client = QdrantClient(host="127.0.0.1", port=server.port, grpc_port=server.grpc_port, prefer_grpc=True,
                          timeout=120)
    client.create_collection(name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT))
    rng = np.random.default_rng(7)
    for start in range(0, n, 2000):
        ids = list(range(start, min(n, start + 2000)))
        client.upsert(name, models.Batch(ids=ids, vectors=rng.random((len(ids), dim), dtype=np.float32).tolist(),
                                         payloads=[{"i": i} for i in ids]), wait=True)
    return QdrantClient(url=server.url, timeout=300)


def shoot(driver, name, width, height):
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(width, height)
    time.sleep(0.3)
    path = SHOTS / f"{name}-{width}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    return path


@pytest.fixture
def gated_server(make_server):
    """A server whose S3 traffic passes a gate that holds a snapshot upload at 20 and 60 MB."""
    endpoint = urlsplit(os.environ.get("S3_TEST_ENDPOINT", ""))
    assert endpoint.hostname, "S3_TEST_ENDPOINT is not set: run `make test` (it starts the S3 server)"
    gate = Gate(endpoint.hostname, endpoint.port or 80, [20 << 20, 60 << 20])
    env = s3_env(f"e2e-{uuid.uuid4().hex}")
    env["QDRANT__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__ENDPOINT_URL"] = f"http://127.0.0.1:{gate.port}"
    server = make_server(env=env)
    server.gate = gate
    yield server
    gate.close()


def moving(seen):
    """The distinct values the progress bar showed strictly between empty and full."""
    return sorted({done for done, total, hidden in seen if done and total and 0 < done < total})


def test_dashboard_create_download_recover_delete_upload(gated_server, browser, tmp_path):
    server = gated_server
    client = fill_big(server, "papers")
    d = browser
    d.get(f"{server.url}/dashboard")
    wait(d, lambda d: card(d, "papers"))
    assert "50000 points" in card(d, "papers").text

    # Create: the page's progress bar is fed by /operations; record every value it shows.
    d.execute_script("""
        window.seen = [];
        const bar = document.querySelector('article[data-collection="papers"] .create-progress');
        new MutationObserver(() => window.seen.push([+bar.dataset.done, bar.max, bar.hidden]))
            .observe(bar, {attributes: true});
    """)
    # The upload into the bucket stops at 20 MB until the page has shown a value part way,
    # and at 60 MB until it has shown a second one: the bar must move however fast the disk.
    card(d, "papers").find_element(By.CSS_SELECTOR, "button.create").click()
    for i, shown in enumerate((1, 2)):
        assert server.gate.reached[i].wait(120), "the snapshot upload did not reach the gate"
        wait(d, lambda d: len(moving(d.execute_script("return window.seen"))) >= shown, 60)
        server.gate.open(i)
    wait(d, lambda d: len(rows(d, "papers")) == 1, 120)
    seen = d.execute_script("return window.seen")
    assert len(moving(seen)) >= 2, f"the progress bar did not move: {seen}"
    snap = client.list_snapshots("papers")[0]
    row = rows(d, "papers")[0]
    assert row.find_element(By.CSS_SELECTOR, "td.sum").get_attribute("data-checksum") == snap.checksum
    assert snap.name in row.text
    shoot(d, "dashboard", 1280, 800)
    shoot(d, "dashboard", 390, 844)
    # Usable on a phone: nothing wider than the screen, every button reachable.
    assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    for b in d.find_elements(By.CSS_SELECTOR, "article.collection button"):
        assert b.is_displayed() and b.rect["x"] + b.rect["width"] <= 390, b.text
    d.set_window_size(1280, 800)

    # Download: the file the browser saved has the listed SHA-256.
    rows(d, "papers")[0].find_element(By.CSS_SELECTOR, "button.download").click()
    target = d.downloads / snap.name
    wait(d, lambda _: target.exists() and target.stat().st_size == snap.size, 120)
    h = hashlib.sha256()
    with open(target, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    assert h.hexdigest() == snap.checksum

    # Recover into a new collection, with a priority, from the dialog.
    rows(d, "papers")[0].find_element(By.CSS_SELECTOR, "button.recover").click()
    field = wait(d, EC.visibility_of_element_located((By.ID, "recover-target")))
    field.clear()
    field.send_keys("restored")
    Select(d.find_element(By.ID, "recover-priority")).select_by_value("snapshot")
    d.find_element(By.ID, "recover-go").click()
    wait(d, lambda d: card(d, "restored"), 180)
    assert client.count("restored").count == 50_000
    assert "50000 points" in card(d, "restored").text

    # Delete, after confirming.
    rows(d, "papers")[0].find_element(By.CSS_SELECTOR, "button.delete").click()
    alert = wait(d, EC.alert_is_present())
    assert snap.name in alert.text
    alert.accept()
    wait(d, lambda d: len(rows(d, "papers")) == 0)
    assert client.list_snapshots("papers") == []

    # A bad upload shows the service's own message.
    bad = tmp_path / "not-a-snapshot.snapshot"
    bad.write_bytes(b"this is not a tar archive" * 100)
    d.find_element(By.ID, "upload-collection").send_keys("uploaded")
    d.find_element(By.ID, "upload-file").send_keys(str(bad))
    d.find_element(By.ID, "upload-button").click()
    error = wait(d, EC.visibility_of_element_located((By.ID, "error")))
    assert "not a tar archive" in error.text and "<" not in error.text
    assert not client.collection_exists("uploaded")
    shoot(d, "dashboard-error", 1280, 800)


def test_dashboard_asks_for_a_key_and_hides_writes_from_the_read_only_key(make_server, browser):
    server = make_server(env={"QDRANT__SERVICE__API_KEY": "full-key-123",
                              "QDRANT__SERVICE__READ_ONLY_API_KEY": "ro-key-456"})
    client = QdrantClient(url=server.url, api_key="full-key-123", timeout=60)
    client.create_collection("papers", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    client.upsert("papers", [models.PointStruct(id=1, vector=[1, 2, 3, 4])], wait=True)
    client.create_snapshot("papers", wait=True)
    d = browser
    d.get(f"{server.url}/dashboard/")
    key = wait(d, EC.visibility_of_element_located((By.ID, "key-input")))
    assert d.find_element(By.CSS_SELECTOR, 'label[for="key-input"]').text
    key.send_keys("ro-key-456\n")
    wait(d, lambda d: card(d, "papers"))
    assert len(rows(d, "papers")) == 1
    visible = [b.text for b in d.find_elements(By.TAG_NAME, "button") if b.is_displayed()]
    assert "Download" in visible
    for write in ("Create snapshot", "Create full snapshot", "Delete", "Recover", "Upload and recover"):
        assert write not in visible, (write, visible)
    # The full key, entered after "API key", shows them.
    d.find_element(By.ID, "change-key").click()
    wait(d, EC.visibility_of_element_located((By.ID, "key-input"))).send_keys("full-key-123\n")
    wait(d, lambda d: card(d, "papers").find_element(By.CSS_SELECTOR, "button.create").is_displayed())
    assert rows(d, "papers")[0].find_element(By.CSS_SELECTOR, "button.delete").is_displayed()
