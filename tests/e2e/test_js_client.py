"""The official TypeScript client (@qdrant/js-client-rest 1.18.0, the newest that runs on
Node 20) drives the real binary through tests/js/smoke.mjs. `make test` installs it."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

JS_DIR = Path(__file__).resolve().parent.parent / "js"


def test_js_client_smoke(server):
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "@qdrant" / "js-client-rest").is_dir():
        pytest.fail("node or tests/js/node_modules is missing: run `make test`, which installs them")
    p = subprocess.run([node, str(JS_DIR / "smoke.mjs"), server.url], capture_output=True, text=True,
                       timeout=180, env=dict(os.environ))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "js client smoke: ok" in p.stdout
