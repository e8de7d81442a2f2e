"""docs/quickstart.md runs as written, top to bottom, in an empty folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).parents[1] / "docs" / "quickstart.md"


def quickstart_blocks() -> list[tuple[str, str]]:
    """The (language, code) blocks after "From the command line" (the first block sets up)."""
    body = QUICKSTART.read_text().split("## From the command line", 1)[1]
    return re.findall(r"```(bash|python)\n(.*?)```", body, re.S)


@pytest.mark.slow
def test_quickstart_runs_top_to_bottom_in_an_empty_folder(tmp_path):
    blocks = quickstart_blocks()
    assert [lang for lang, _ in blocks] == ["bash", "python"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for lang, code in blocks:
        command = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else \
            [sys.executable, "-c", code]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{lang} block failed:\n{code}\n{done.stderr[-3000:]}"
    # what the page promises: the files, and a stream scored against the same mixture
    for name in ("model.npz", "best.npz", "selection.png", "labels.parquet", "clusters.png",
                 "model-from-python.npz"):
        assert (tmp_path / name).stat().st_size > 0, name
    events = [json.loads(line) for line in open(tmp_path / "events.jsonl")]
    scored = [json.loads(line) for line in open(tmp_path / "scored.jsonl")]
    assert [s["id"] for s in scored] == [e["id"] for e in events]
    injected = {e["id"] for e in events if e["injected"]}
    flagged = {s["id"] for s in scored if s["anomaly"]}
    assert injected <= flagged  # every pushed-away record is caught
    assert len(flagged - injected) <= 0.03 * len(events)  # and about 1 % of the others


DOCS_WITH_CURL = [Path(__file__).parents[1] / name
                  for name in ("README.md", "docs/serving.md", "docs/quickstart.md")]


def _curl_records(text: str) -> list[dict]:
    """The JSON records the ``curl ... -d '...'`` examples of a page send."""
    records = []
    for body in re.findall(r"curl [^\n]*?-d '(.*?)'", text, re.S):
        sent = json.loads(body)
        records.extend(sent if isinstance(sent, list) else [sent])
    return records


def test_curl_examples_send_the_quickstart_models_features():
    """Every page's curl example sends the features the quickstart's model is fitted on:
    make-data's --features count, named x0 ... x{n-1} as make-data names them."""
    fit_data = re.search(r"streammix make-data data/ [^\n]*--features (\d+)",
                         QUICKSTART.read_text())
    features = {f"x{j}" for j in range(int(fit_data.group(1)))}
    for page in DOCS_WITH_CURL:
        records = _curl_records(page.read_text())
        assert records, f"{page.name}: no curl -d example"
        for record in records:
            assert set(record) - {"id"} == features, (page.name, sorted(record))
