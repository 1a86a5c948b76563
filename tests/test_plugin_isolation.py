"""A broken plugin never breaks the host: whatever it does short of killing the process (``sys.exit()`` at import or
in a hook, a custom ``BaseException``, a hook argument pluggy refuses, a misspelled hook name, no hook at all, using
the registry at import), it is reported by name with the reason and skipped, and ``invgen plugins`` lists it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pluggy
import pytest

import invgen
from invgen import registry


@pytest.fixture
def fresh_registry():
    registry.reset()
    yield
    registry.reset()
    for name in [m for m in sys.modules if m.endswith("_mod")]:  # the fake plugins' modules: each test its own
        del sys.modules[name]


def _fake_distribution(tmp_path: Path, module_source: str, dist: str = "broken_plugin") -> Path:
    """A site folder holding one installed distribution whose ``invgen`` entry point is a module of this source."""
    site = tmp_path / "site"
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[invgen]\n{dist.replace('_', '-')} = {dist}_mod\n")
    (site / f"{dist}_mod.py").write_text(textwrap.dedent(module_source))
    return site


HOOK = """
import invgen

@invgen.hookimpl
def register_operators(register):
    register("fine-op", lambda **kw: invgen.operator("identity", **kw), linear=True)
"""

# (module source, stage, what the failure must say)
BROKEN = {
    "sys-exit-at-import": ("import sys\nsys.exit(3)\n", "import", "SystemExit: the plugin called sys.exit(3)"),
    "bare-sys-exit": ("import sys\nsys.exit()\n", "import", "SystemExit: the plugin called sys.exit()"),
    "base-exception-at-import": (
        "class Odd(BaseException):\n    pass\nraise Odd('not an Exception')\n",
        "import",
        "Odd: not an Exception",
    ),
    "misnamed-argument": (
        "import invgen\n\n@invgen.hookimpl\ndef register_priors(regster):\n    pass\n",
        "register",
        "Argument(s) {'regster'} are declared in the hookimpl but can not be found in the hookspec",
    ),
    "misspelled-hook": (
        "import invgen\n\n@invgen.hookimpl\ndef register_prior(register):\n    pass\n",
        "register",
        "unknown hook 'register_prior' (did you mean 'register_priors'?)",
    ),
    "no-hook-at-all": (
        "def register_priors(register):\n    pass\n",
        "register",
        "implements no invgen hook (are its functions decorated with @invgen.hookimpl?)",
    ),
    "registry-at-import": (
        "import invgen\ninvgen.list_priors()\n",
        "import",
        "a plugin used invgen's registry while being imported",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_plugin_is_reported_by_name_and_skipped(tmp_path, monkeypatch, fresh_registry, case):
    source, stage, expected = BROKEN[case]
    monkeypatch.syspath_prepend(str(_fake_distribution(tmp_path, source)))
    with pytest.warns(RuntimeWarning, match="invgen: plugin 'broken-plugin' from distribution 'broken_plugin'"):
        invgen.plugin_manager()
    (failure,) = [f for f in registry.plugin_failures() if f.plugin == "broken-plugin"]
    assert failure.stage == stage and expected in failure.error, failure.error
    assert "\n" not in failure.error
    assert registry.plugin_manager().get_plugin("broken-plugin") is None  # skipped
    assert "identity" in invgen.list_operators() and "gmm" in invgen.list_priors()  # the host works


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("import sys\n    sys.exit(5)", "SystemExit: the plugin called sys.exit(5)"),
        ("class Odd(BaseException):\n        pass\n    raise Odd('odd')", "Odd: odd"),
    ],
)
def test_base_exception_in_a_hook_is_reported_and_skipped(tmp_path, monkeypatch, fresh_registry, body, expected):
    source = f"import invgen\n\n@invgen.hookimpl\ndef register_priors(register):\n    {body}\n" + HOOK.replace(
        "import invgen\n", ""
    )
    monkeypatch.syspath_prepend(str(_fake_distribution(tmp_path, source)))
    with pytest.warns(RuntimeWarning, match="'broken-plugin'.*raised in register_priors"):
        priors = invgen.list_priors()
    assert "gmm" in priors
    (failure,) = [f for f in registry.plugin_failures() if f.plugin == "broken-plugin"]
    assert (failure.stage, failure.error) == ("register_priors", expected)
    assert "fine-op" in invgen.list_operators()  # its other hook still counts


def test_keyboard_interrupt_is_not_swallowed(tmp_path, monkeypatch, fresh_registry):
    monkeypatch.syspath_prepend(str(_fake_distribution(tmp_path, "raise KeyboardInterrupt\n")))
    with pytest.raises(KeyboardInterrupt):
        invgen.plugin_manager()


def test_optional_hook_of_a_newer_invgen_is_accepted(tmp_path, monkeypatch, fresh_registry):
    source = HOOK + "\n@invgen.hookimpl(optionalhook=True)\ndef register_samplers(register):\n    pass\n"
    monkeypatch.syspath_prepend(str(_fake_distribution(tmp_path, source)))
    assert "fine-op" in invgen.list_operators()
    assert not [f for f in registry.plugin_failures() if f.plugin == "broken-plugin"]


def test_in_memory_plugin_with_unknown_hook_is_refused_at_registration(fresh_registry):
    class Misspelled:
        @invgen.hookimpl
        def register_solver(self, register):
            pass

    with pytest.raises(pluggy.PluginValidationError, match=r"unknown hook 'register_solver'.*'register_solvers'"):
        invgen.plugin_manager().register(Misspelled(), name="misspelled")
    assert invgen.plugin_manager().get_plugin("misspelled") is None


def test_cli_plugins_lists_broken_plugins_with_their_reason(tmp_path):
    sites = [
        _fake_distribution(tmp_path / name, source, dist=name)
        for name, source in [
            ("exiting", "import sys\nsys.exit(2)\n"),
            ("misnamed", BROKEN["misnamed-argument"][0]),
            ("misspelled", BROKEN["misspelled-hook"][0]),
        ]
    ]
    path = os.pathsep.join([*(str(s) for s in sites), os.environ.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-m", "invgen.cli", "plugins"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "Plugins that failed and were skipped" in out.stdout and "gmm" in out.stdout
    assert "exiting (exiting) at import: SystemExit: the plugin called sys.exit(2)" in out.stdout
    assert "misnamed (misnamed) at register: PluginValidationError:" in out.stdout
    assert "{'regster'} are declared in the hookimpl" in out.stdout
    assert "misspelled (misspelled) at register: PluginValidationError: plugin 'misspelled': unknown hook" in out.stdout
