"""README and docs/serving.md give install lines that work: the wheel they name is the one
``pip wheel`` builds, and the README still opens with its two commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "serving.md"]


def _bash_lines(path: Path) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]


def test_the_readme_opens_with_its_two_commands_then_says_how_to_install():
    text = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)```", text, re.S).group(1).splitlines()
    assert [line.split()[0] for line in first] == ["scripts/demo", "scripts/test"]
    assert text.index("scripts/demo") < text.index("## Installing")
    for path in DOCS:
        lines = _bash_lines(path)
        assert "pip install -e '.[serve]'" in lines, path
        assert "pip wheel --no-deps -w dist ." in lines, path
        # the name does not resolve on PyPI: never given as a command
        assert not any("install 'streammix[serve]'" in line for line in lines), path


@pytest.mark.slow
def test_the_wheel_the_docs_name_is_the_one_pip_builds(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "--disable-pip-version-check", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    [wheel] = [p.name for p in tmp_path.glob("*.whl")]
    for path in DOCS:
        named = [line for line in _bash_lines(path) if line.startswith("pip install 'dist/")]
        assert named == [f"pip install 'dist/{wheel}[serve]'"], path
