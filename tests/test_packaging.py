"""Packaging and documentation stay true: package list, entry points, README commands, CI script, weights rules."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _packages_on_disk() -> set[str]:
    found = set()
    for top, name in (("invgen", "invgen"), ("plugins", "invgen_plugins")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join((name, *rel.parts)) if rel.parts else name)
    return found


def test_every_package_is_listed_in_pyproject():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert listed == _packages_on_disk()


def test_every_builtin_plugin_is_an_entry_point():
    eps = PYPROJECT["project"]["entry-points"]["invgen"]
    families = {p.parent.name for p in (ROOT / "plugins").glob("*/__init__.py")}
    assert {v.split(".")[-1] for v in eps.values()} == families
    assert all(v.startswith("invgen_plugins.") for v in eps.values())


def test_readme_commands_are_the_ci_commands():
    """The README's one setup command (everything its tests need, the template plugin included) and its test command
    are what .ci/run runs."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    setup = re.search(r"^(pip install -e \"\.\[dev\]\"[^#\n]*?)\s*(#|$)", readme, re.M)
    test = re.search(r"^(python -m pytest)\s", readme, re.M)
    assert setup and test and "invgen demo" in readme
    assert "-e examples/plugin_template" in setup.group(1), "the README's setup must install the template plugin"
    assert re.search(rf"^{re.escape(setup.group(1))}( -q)?$", ci, re.M), (setup.group(1), "not in .ci/run")
    assert re.search(rf"^{re.escape(test.group(1))}$", ci, re.M)
    assert "INVGEN_DATA" in ci and "INVGEN_LPIPS_WEIGHTS" in ci


def test_no_unsafe_weight_loading_in_library_code():
    for path in list((ROOT / "invgen").rglob("*.py")) + list((ROOT / "plugins").rglob("*.py")):
        for line in path.read_text().splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"
            for call in ("urlopen(", "requests.get(", "hf_hub_download(", "load_state_dict_from_url("):
                assert call not in line, f"{path} downloads at run time: {line.strip()}"


def test_readme_quickstart_runs():
    """The README's quickstart is executed as written, so the documented API stays true."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart\s+```python\n(.*?)```", readme, re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README.md quickstart", "exec"), scope)
    post = scope["post"]
    assert post.samples.shape == (64, 2, 1, 8, 8)
    assert 0.3 < post.extras["acceptance_rate"] < 0.8
    assert (post.mean - scope["exact"].mean).abs().max() < 0.15
