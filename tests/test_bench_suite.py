"""Suite files: validation with the line and the reason, cell planning, shipped suites."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from invgen.bench.suite import SuiteError, load_suite, parse_suite

BASE = """\
name: t
seeds: [0, 1]
samples: 2
datasets:
  - name: mnist
    count: 3
    priors:
      - {name: gmm, options: {image_shape: [1, 32, 32]}}
tasks:
  - {name: sr4, operator: superres, options: {scale: 4}, noise: 0.05}
  - {name: blur, operator: blur, options: {kernel: gaussian, sigma: 1.0}, noise: 0.05}
solvers:
  - pinv
  - {name: ddrm, options: {steps: 5}}
  - {name: dps, options: {steps: 5}, label: dps-5}
"""


def test_valid_suite_cells_and_skips():
    s = parse_suite(BASE, "base.yaml")
    titles = sorted(c.title for c in s.cells)
    # pinv: 2 tasks x 2 seeds; ddrm only on sr4 (blur has no SVD); dps on both tasks; gmm is the only prior.
    assert len(s.cells) == 4 + 2 + 4
    assert "mnist/sr4/none/pinv/seed0" in titles
    assert 'mnist/blur/gmm{"image_shape": [1, 32, 32]}/dps-5/seed1' in titles
    assert not any("blur" in t and "ddrm" in t for t in titles)
    assert ("mnist/blur/ddrm", "needs an operator with an SVD, 'blur' has none") in s.skipped
    assert s.samples == 2 and s.seeds == (0, 1) and s.batch == 16
    # the hash is a function of the config only
    assert parse_suite(BASE, "other.yaml").hash == s.hash
    assert parse_suite(BASE.replace("count: 3", "count: 4"), "x").hash != s.hash
    # cell ids differ by seed and by the frozen observations' checksum
    c0, c1 = (c for c in s.cells if c.solver.name == "pinv" and c.task.name == "sr4")
    assert c0.cell_id("a") != c1.cell_id("a") and c0.cell_id("a") != c0.cell_id("b")


def _error(text: str) -> str:
    with pytest.raises(SuiteError) as exc:
        parse_suite(textwrap.dedent(text), "bad.yaml")
    return str(exc.value)


@pytest.mark.parametrize(
    ("old", "new", "line", "reason"),
    [
        ("seeds: [0, 1]", "seedz: [0, 1]", 2, "unknown suite key 'seedz' (did you mean 'seeds'?)"),
        ("  - pinv", "  - pinvv", 13, "pinvv"),
        ("{steps: 5}}\n  - {name: dps", "{stepz: 5}}\n  - {name: dps", 14, "unknown option(s) ['stepz']"),
        ("options: {scale: 4}", "options: {scale: 4, foo: 1}", 10, "cannot build operator 'superres'"),
        ("count: 3", "count: 0", 6, "count: expected an integer >= 1, got 0"),
        ("count: 3", "count: 3\n    ids: [1]", 7, "give either ids or count/start, not both"),
        ("samples: 2", "samples: two", 3, "samples: expected an integer >= 1"),
        ("label: dps-5", "label: ddrm", 15, "repeated solver label 'ddrm'"),
        ("name: t\n", "name: T x\n", 1, "suite name: expected lower-case"),
        ("operator: blur", "operator: blurr", 11, "blurr"),
        ("[1, 32, 32]}}", "[1, 32, 32]}}\n      - nosuchprior", 9, "nosuchprior"),
    ],
)
def test_invalid_suites_name_line_and_reason(old, new, line, reason):
    assert old in BASE
    msg = _error(BASE.replace(old, new, 1))
    assert msg.startswith(f"bad.yaml:{line}: "), msg
    assert reason in msg, msg


def test_solver_that_runs_nowhere_is_an_error_unless_optional():
    text = BASE.replace("  - pinv\n", "  - pinv\n  - {name: mala, options: {steps: 5}}\n")
    # gmm offers log_density, so mala runs; an identity-free solver restricted to a missing capability does not:
    assert len(parse_suite(text).cells) == 14
    text = BASE.replace("  - pinv\n", "  - pinv\n  - {name: ddnm, tasks: [blur]}\n")
    msg = _error(text)
    assert msg.startswith("bad.yaml:14: solver 'ddnm' runs in no cell") and "has none" in msg
    ok = parse_suite(BASE.replace("  - pinv\n", "  - pinv\n  - {name: ddnm, tasks: [blur], optional: true}\n"))
    assert len(ok.cells) == 10
    ok = parse_suite(BASE.replace("  - pinv\n", "  - pinv\n  - {name: not_installed_solver, optional: true}\n"))
    assert ("not_installed_solver", "optional solver not installed") in ok.skipped


def test_yaml_syntax_error_has_a_line():
    msg = _error("name: t\ndatasets: [mnist\ntasks: []\n")
    assert msg.startswith("bad.yaml:") and "not valid YAML" in msg


def test_prior_shape_must_match_the_dataset():
    from invgen import registry

    entry = next(iter(e for e in registry.entries("priors").values() if e.meta.get("image_shape")), None)
    if entry is None:
        pytest.skip("no prior with an image_shape registered")  # pragma: no cover - diffusion ships weights
    shape = tuple(entry.meta["image_shape"])
    wrong = "cifar10" if shape[0] == 1 else "mnist"
    text = BASE.replace("priors:\n      - {name: gmm, options: {image_shape: [1, 32, 32]}}", f"priors: [{entry.name}]")
    text = text.replace("name: mnist", f"name: {wrong}")
    msg = _error(text)
    assert msg.startswith("bad.yaml:7:") and f"is defined on images of shape {shape}" in msg


def test_transform_changes_the_shape_and_is_checked():
    s = parse_suite(BASE.replace("count: 3", "count: 3\n    transform: {crop: 24, gray: true}"))
    assert s.datasets[0].shape == (1, 24, 24)
    msg = _error(BASE.replace("count: 3", "count: 3\n    transform: {crop: 40}"))
    assert msg.startswith("bad.yaml:7:") and "crop (40, 40) is larger than the images (32x32)" in msg
    msg = _error(BASE.replace("count: 3", "count: 3\n    transform: {crop: 30}"))
    assert msg.startswith("bad.yaml:11:") and "does not apply to dataset 'mnist' of shape (1, 30, 30)" in msg


def test_auto_priors_follow_the_registered_datasets():
    from invgen import registry

    expected = sorted(n for n, e in registry.entries("priors").items() if "mnist" in e.meta.get("datasets", ()))
    text = BASE.replace("priors:\n      - {name: gmm, options: {image_shape: [1, 32, 32]}}", "priors: auto")
    s = parse_suite(text)
    assert sorted(p.name for p in s.datasets[0].priors) == expected


def test_auto_priors_skip_any_size_priors_of_the_wrong_channel_count():
    import invgen
    from invgen import registry

    class AnySize:
        @invgen.hookimpl
        def register_priors(self, register):
            kw = {"capabilities": ("denoiser",), "image_shape": None, "datasets": ("set12", "kodak24")}
            register("gray-any-size", lambda **o: invgen.Prior(), channels=1, **kw)
            register("rgb-any-size", lambda **o: invgen.Prior(), channels=3, **kw)

    suite = """\
name: t
datasets:
  - {name: set12, priors: auto}
  - {name: kodak24, priors: auto}
tasks:
  - {name: dn, operator: identity, noise: 0.1}
solvers:
  - pinv
"""
    pm = invgen.plugin_manager()
    pm.register(AnySize(), name="any-size")
    try:
        s = parse_suite(suite)
        found = {d.label: [p.name for p in d.priors if p.name.endswith("any-size")] for d in s.datasets}
        assert found == {"set12": ["gray-any-size"], "kodak24": ["rgb-any-size"]}
    finally:
        pm.unregister(name="any-size")
    assert "gray-any-size" not in registry.entries("priors")


@pytest.mark.parametrize("name", ["quick", "mnist", "fashion-mnist", "cifar10", "classic"])
def test_shipped_suites_are_valid(name):
    s = load_suite(name)
    assert s.name == name and len(s.cells) > 0
    assert Path(s.source).parent.name == "suites"


def test_unknown_suite_file():
    with pytest.raises(SuiteError, match="neither a file nor a shipped suite"):
        load_suite("no-such-suite")


def test_cli_validate_and_plan(tmp_path, capsys):
    from invgen.cli import main

    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    assert main(["bench", "validate", str(good)]) == 0
    assert f"{good}: valid suite 't' with 10 cells (1 skipped)" in capsys.readouterr().out
    assert main(["bench", "plan", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("suite t: 10 cells") and "mnist/blur/ddrm: needs an operator with an SVD" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("count: 3", "count: -1"))
    assert main(["bench", "validate", str(bad)]) == 2
    assert f"invgen bench: {bad}:6: count: expected an integer >= 1, got -1" in capsys.readouterr().err
