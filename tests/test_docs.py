"""The documentation stays navigable: the site builds strictly, and the README stays short with working links."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 250

# [text](target) and ![alt](target); the target ends at whitespace or ')'.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _relative_links(markdown: str) -> list[str]:
    """Relative link targets of a markdown text, fenced code blocks left out."""
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    targets = [m.group(1) for m in _LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move reference material to a page under docs/"
    )


def test_readme_links_point_to_existing_files():
    links = _relative_links(README.read_text())
    assert links, "README.md should link to the documentation"
    missing = [t for t in links if not (ROOT / t.split("#", 1)[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_relative_links_helper_ignores_urls_anchors_and_code():
    text = "[a](docs/x.md) [b](https://e.org) [c](#top) ![d](img.png)\n```\n[e](inside.md)\n```\n"
    assert _relative_links(text) == ["docs/x.md", "img.png"]


def test_cli_reference_lists_every_command():
    from invgen.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    page = (ROOT / "docs" / "cli.md").read_text()
    missing = [name for name in sub.choices if name not in ("train", "convert") and f"## `invgen {name}`" not in page]
    missing += [f"convert {n}" for n in ("adm",) if f"## `invgen convert {n}`" not in page]  # each shipped converter
    assert not missing, f"docs/cli.md lacks {missing}: run python tools/cli_docs.py"


def test_mkdocs_build_is_strict_clean(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip('mkdocs is not installed (it comes with the dev extra: pip install -e ".[dev]")')
    if importlib.util.find_spec("material") is None:
        pytest.skip('the mkdocs material theme is not installed (it comes with the dev extra: pip install -e ".[dev]")')
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
        check=False,
    )
    warnings = [line for line in done.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert done.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(warnings or [done.stderr[-3000:]])
    assert (tmp_path / "site" / "index.html").exists()
