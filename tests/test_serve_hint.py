"""scripts/demo's last lines: the serve and curl lines it prints work as printed."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import streammix as sm

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "serve_hint.py"
STREAMMIX = os.path.join(os.path.dirname(sys.executable), "streammix")
pytestmark = [pytest.mark.slow, pytest.mark.service]  # starts `streammix serve`


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_printed_serve_and_curl_lines_score_one_record_of_the_model(tmp_path):
    def cli(*args):
        subprocess.run([STREAMMIX, *args], cwd=tmp_path, check=True, capture_output=True)

    # the demo's own commands, smaller
    (tmp_path / "out").mkdir()
    cli("make-data", "data", "--rows", "4000", "--features", "16", "--components", "8",
        "--files", "1", "--seed", "7")
    cli("fit", "data", "-k", "3", "--seed", "0", "--max-iter", "10", "--contamination",
        "0.01", "-o", "out/model.npz")
    cli("make-data", "out/stream.jsonl", "--format", "jsonl", "--rows", "50", "--features",
        "16", "--components", "8", "--anomalies", "0.1", "--seed", "8")
    printed = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "out/model.npz"),
                              str(tmp_path / "out/stream.jsonl"), str(tmp_path)],
                             check=True, capture_output=True, text=True).stdout.splitlines()
    serve = [line for line in printed if line.startswith("streammix serve ")]
    curl = [line for line in printed if line.startswith("curl ")]
    assert serve == ["streammix serve out/model.npz --http 127.0.0.1:8000"]
    assert len(curl) == 1 and "127.0.0.1:8000/score" in curl[0]
    sent = json.loads(shlex.split(curl[0])[-1])
    # make-data's names for 16 features, and a record of the stream that was not injected
    assert list(sent) == ["id", *(f"x{i}" for i in range(16))]
    stream = {r["id"]: r for r in map(json.loads, open(tmp_path / "out/stream.jsonl"))}
    assert not stream[sent["id"]]["injected"]
    assert all(abs(sent[k] - stream[sent["id"]][k]) < 1e-4 for k in sent if k != "id")

    # run both lines as printed, on a free port instead of 8000
    port = str(_free_port())
    server = subprocess.Popen([STREAMMIX, *shlex.split(serve[0].replace("8000", port))[1:]],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.2)
        if shutil.which("curl"):
            answer = subprocess.run(shlex.split(curl[0].replace("8000", port)), check=True,
                                    capture_output=True, text=True).stdout
        else:  # the same request without curl
            request = urllib.request.Request(f"http://127.0.0.1:{port}/score",
                                             data=json.dumps(sent).encode(), method="POST")
            answer = urllib.request.urlopen(request, timeout=10).read().decode()
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(20)
    model = sm.load(tmp_path / "out/model.npz")  # the file's threshold, scored in-process
    scorer = sm.AnomalyScorer(model, threshold=model.anomaly_threshold_)
    assert json.loads(answer) == next(iter(scorer.score_records([sent])))
