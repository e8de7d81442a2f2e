"""How to serve a fitted model: the ``streammix serve`` line and a curl line for one record.

``python scripts/serve_hint.py MODEL STREAM.jsonl [ROOT]`` prints them; ``scripts/demo``
calls it at its end. The record is the stream's first one that was not injected, cut to
the model's own features (as ``make-data`` names them: x0, x1, ...), so the curl line
sends what the model expects. Paths are printed relative to ROOT (where the demo runs).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import sys

import streammix as sm

ADDRESS = "127.0.0.1:8000"


def hint(model_path, stream_path, root=".") -> list[str]:
    """The lines to print.

    Parameters
    ----------
    model_path : str
        The fitted model file (with an anomaly threshold).
    stream_path : str
        JSON lines of records with the model's features (``make-data --format jsonl``).
    root : str
        The directory the commands are run from.

    Returns
    -------
    list of str
        Shell lines and the comments that introduce them.
    """
    names = [str(name) for name in sm.load(model_path).feature_names_in_]
    with open(stream_path, encoding="utf-8") as handle:
        first = next(r for r in map(json.loads, handle) if not r.get("injected"))
    record = {"id": first["id"], **{name: round(first[name], 4) for name in names}}
    model = os.path.relpath(model_path, root)
    lines = ["# serve the fitted model over HTTP (in another terminal, from "
             f"{os.path.abspath(root)}, with the environment's bin/ on PATH):"]
    if any(importlib.util.find_spec(m) is None for m in ("starlette", "uvicorn",
                                                          "prometheus_client")):
        lines.append("pip install -e '.[serve]'   # the serving extra, once")
    lines += [f"streammix serve {shlex.quote(model)} --http {ADDRESS}",
              f"# then score one record ({len(names)} features: {names[0]}..{names[-1]}):",
              f"curl -s http://{ADDRESS}/score -H 'Content-Type: application/json' "
              f"-d {shlex.quote(json.dumps(record))}"]
    return lines


if __name__ == "__main__":
    print("\n".join(hint(*sys.argv[1:4])))
