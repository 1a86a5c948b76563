"""The prior conformance kit (invgen.testing.check_prior): every built-in prior passes it, and each deliberately
broken fake prior fails exactly the check for its defect, with a message that names the problem and the fix."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest
import torch

import invgen
from invgen import registry
from invgen.cli import main
from invgen.errors import ConformanceError
from invgen.testing import PriorReport, check_prior, check_registered
from invgen.testing.check_prior import required_options

SHAPE = (1, 8, 8)


# -- fakes: a correct small prior, and one defect per subclass ------------------------------------------------------
class IIDGaussian(invgen.Prior):
    """Pixels i.i.d. N(0.5, 0.2^2): exact denoiser, score, log-density; a generator x = 0.5 + 0.2 z."""

    name = "fake-iid"
    capabilities = frozenset({"denoiser", "score", "log_density", "generator"})
    log_prob_kind = "exact"
    image_shape = SHAPE
    mean, std = 0.5, 0.2

    def _var(self, x, sigma):
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        return self.std**2 + (s.reshape(-1, 1, 1, 1) if s.dim() else s) ** 2

    def denoise(self, x, sigma):
        return self.mean + self.std**2 / self._var(x, sigma) * (x - self.mean)

    def score(self, x, sigma=0.0):
        return -(x - self.mean) / self._var(x, sigma)

    def log_prob(self, x):
        d = x[0].numel()
        sq = ((x - self.mean) ** 2).flatten(1).sum(1)
        return -0.5 * sq / self.std**2 - 0.5 * d * math.log(2 * math.pi * self.std**2)

    @property
    def latent_shape(self):
        return (math.prod(SHAPE),)

    def decode(self, z):
        return (self.mean + self.std * z).reshape(z.shape[0], *SHAPE)


class TanhDecoder(invgen.Prior):
    """A generator whose network ends in tanh and was never converted to [0, 1]."""

    name = "fake-tanh"
    capabilities = frozenset({"generator"})
    image_shape = SHAPE

    def __init__(self, to_unit: bool = False) -> None:
        super().__init__()
        self.to_unit = to_unit
        self.weight = torch.nn.Parameter(torch.randn(4, math.prod(SHAPE), generator=torch.Generator().manual_seed(1)))

    @property
    def latent_shape(self):
        return (4,)

    def decode(self, z):
        x = torch.tanh(2 * z @ self.weight).reshape(z.shape[0], *SHAPE)
        return (x + 1) / 2 if self.to_unit else x


class WrongSignScore(IIDGaussian):
    """Score and log-density only, the score pointing downhill."""

    capabilities = frozenset({"score", "log_density"})
    denoise = invgen.Prior.denoise
    decode = invgen.Prior.decode
    latent_shape = invgen.Prior.latent_shape

    def score(self, x, sigma=0.0):
        return -super().score(x, sigma)


class WrongSignScoreWithDenoiser(IIDGaussian):
    def score(self, x, sigma=0.0):
        return -super().score(x, sigma)


class ColumnLogProb(IIDGaussian):
    def log_prob(self, x):
        return super().log_prob(x)[:, None]  # (B, 1)


class Misspelled(IIDGaussian):
    capabilities = frozenset({"denoiser", "scores", "log_density", "generator"})


class NoisyDenoiser(invgen.Prior):
    """A 'denoiser' that returns its input plus more noise."""

    name = "fake-noisy-denoiser"
    capabilities = frozenset({"denoiser"})
    image_shape = SHAPE

    def denoise(self, x, sigma):
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return x + s * torch.randn_like(x)


class DeclaresScoreOnly(invgen.Prior):
    """Declares a score it does not implement; implements a denoiser it does not declare."""

    capabilities = frozenset({"score"})
    image_shape = SHAPE

    def denoise(self, x, sigma):
        return x


# -- helpers --------------------------------------------------------------------------------------------------------
@pytest.fixture
def fresh_registry():
    registry.reset()
    yield
    registry.reset()


def failed_check(report: PriorReport, name: str) -> str:
    """The message of check ``name``, asserting that it failed (and so the report is not ok)."""
    assert not report.ok, str(report)
    assert report[name].status == "failed", str(report)
    return report[name].message


# -- every built-in prior passes ------------------------------------------------------------------------------------
BUILTIN = sorted(n for n, e in registry.entries("priors").items() if e.distribution == "invgen")


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_prior_passes(name):
    entry = registry.get("priors", name)
    if not entry.meta.get("examples") and required_options(entry.factory):
        pytest.skip(f"{name} needs factory options {required_options(entry.factory)} (e.g. a local folder)")
    for report in check_registered(name):
        if "build" in report.names() and "not shipped in this build" in report["build"].message:
            pytest.skip(report["build"].message)  # a build without the shipped weights
        assert report.ok, str(report)
        assert report.seconds < 5, f"{report.prior} took {report.seconds:.1f} s (mark it slow)"
        checked = {n.split(".")[0] for n in report.names() if report[n].status == "passed"}
        assert set(entry.meta["capabilities"]) <= checked, f"not every capability was checked: {report}"


def test_correct_fake_passes_and_report_reads_well():
    report = check_prior(IIDGaussian(), declared={"capabilities": tuple(IIDGaussian.capabilities)})
    assert report.ok, str(report)
    text = str(report)
    assert text.splitlines()[0].startswith("fake-iid: OK (")
    assert "PASS  log_density.score" in text and "PASS  denoiser.reduces_error" in text
    assert report.failed == [] and report.passed and len(report.results) == len(report.names())
    assert check_prior(TanhDecoder(to_unit=True)).ok


# -- one defect each ------------------------------------------------------------------------------------------------
def test_decoder_in_minus_one_one_fails_range():
    report = check_prior(TanhDecoder())
    msg = failed_check(report, "generator.range")
    assert "expected clean images on the [0, 1] scale" in msg
    assert "got values in [-" in msg and "below 0" in msg
    assert "[-1, 1]" in msg and "(x + 1) / 2" in msg
    assert report["generator.decode"].status == "passed"


def test_score_with_wrong_sign_fails_against_log_prob():
    report = check_prior(WrongSignScore())
    msg = failed_check(report, "log_density.score")
    assert "opposite sign" in msg and "grad_x log_prob" in msg
    assert [r.name for r in report.failed] == ["log_density.score"]


def test_zero_score_fails_against_log_prob():
    class ZeroScore(WrongSignScore):
        def score(self, x, sigma=0.0):
            return torch.zeros_like(x)

    msg = failed_check(check_prior(ZeroScore()), "log_density.score")
    assert "|score(x, 0)| = 0" in msg


def test_score_with_wrong_sign_fails_tweedie_against_denoiser():
    report = check_prior(WrongSignScoreWithDenoiser())
    msg = failed_check(report, "score.tweedie")
    assert "Tweedie" in msg and "sign flipped" in msg
    assert "opposite sign" in report["log_density.score"].message


def test_log_prob_of_shape_b_1_fails_shape():
    report = check_prior(ColumnLogProb())
    msg = failed_check(report, "log_density.shape")
    assert "expected shape (3,), got (3, 1)" in msg and "one value per image" in msg
    assert report["log_density.finite"].status == "skipped"
    assert report["log_density.score"].status == "skipped"


def test_misspelled_capability_is_refused_with_the_known_names():
    report = check_prior(Misspelled())
    msg = failed_check(report, "declaration.capabilities")
    assert "unknown capability 'scores'" in msg and "did you mean 'score'" in msg
    assert "known capabilities: denoiser, score, log_density, generator" in msg


def test_misspelled_capability_in_registration_metadata_is_refused():
    declared = {"capabilities": ("denoiser", "score", "log_densty", "generator")}
    msg = failed_check(check_prior(IIDGaussian(), declared=declared), "declaration.registered")
    assert "'log_densty'" in msg and "did you mean 'log_density'" in msg and "known capabilities" in msg


def test_registered_capabilities_must_match_the_object():
    msg = failed_check(check_prior(IIDGaussian(), declared=("denoiser", "score")), "declaration.registered")
    assert "register() says capabilities ['denoiser', 'score']" in msg
    assert "the built prior declares ['denoiser', 'generator', 'log_density', 'score']" in msg


def test_image_shape_mismatch_with_registration_fails():
    declared = {"capabilities": tuple(IIDGaussian.capabilities), "image_shape": (1, 16, 16)}
    msg = failed_check(check_prior(IIDGaussian(), declared=declared), "declaration.image_shape")
    assert "register() says image_shape=(1, 16, 16)" in msg and "image_shape=(1, 8, 8)" in msg


def test_denoiser_that_adds_noise_fails_error_reduction():
    report = check_prior(NoisyDenoiser())
    msg = failed_check(report, "denoiser.reduces_error")
    assert "closer to the clean images than its input" in msg and "x the input's" in msg
    assert "deterministic" in report["denoiser.output"].message  # a random output differs from call to call


def test_declared_but_unimplemented_and_implemented_but_undeclared():
    msg = failed_check(check_prior(DeclaresScoreOnly()), "declaration.implemented")
    assert "declares 'score' but does not implement score(x, sigma=0.0)" in msg
    assert "implements denoise(x, sigma) but does not declare 'denoiser'" in msg


def test_exceptions_of_the_prior_become_failures():
    class Raising(IIDGaussian):
        def log_prob(self, x):
            raise RuntimeError("boom")

    msg = failed_check(check_prior(Raising()), "log_density.shape")
    assert "log_prob(x) with x of shape (3, 1, 8, 8) raised RuntimeError: boom" in msg


def test_strict_raises_at_the_first_failure():
    with pytest.raises(ConformanceError, match=r"failed generator\.range: .*\[-1, 1\]") as info:
        check_prior(TanhDecoder(), strict=True)
    assert info.value.check.name == "generator.range"
    assert info.value.report.results[-1] is info.value.check
    with pytest.raises(ConformanceError, match="failed 1 check"):
        check_prior(ColumnLogProb()).raise_if_failed()


def test_declared_must_be_metadata_or_names():
    with pytest.raises(TypeError, match="declared: expected the registration metadata"):
        check_prior(IIDGaussian(), declared="denoiser")


def test_reports_repeat_with_the_same_seed():
    a = check_prior(IIDGaussian(), generator=torch.Generator().manual_seed(3))
    b = check_prior(IIDGaussian(), generator=torch.Generator().manual_seed(3))
    assert [r.message for r in a.results] == [r.message for r in b.results]


# -- through the registry and the CLI -------------------------------------------------------------------------------
class _FakePlugin:
    @invgen.hookimpl
    def register_priors(self, register):
        register("fake-tanh", TanhDecoder, capabilities=("generator",), image_shape=SHAPE)
        register("fake-wrong-shape", IIDGaussian, capabilities=tuple(IIDGaussian.capabilities), image_shape=(1, 9, 9))
        register("fake-needs-path", lambda path, **kw: IIDGaussian(), capabilities=tuple(IIDGaussian.capabilities))


def test_check_registered_compares_with_registration(fresh_registry):
    invgen.plugin_manager().register(_FakePlugin(), name="fake-plugin")
    (report,) = check_registered("fake-wrong-shape")
    assert "register() says image_shape=(1, 9, 9)" in failed_check(report, "declaration.image_shape")
    (report,) = check_registered("fake-needs-path")
    msg = failed_check(report, "build")
    assert "the factory needs path" in msg and "--option path=..." in msg
    (report,) = check_registered("gmm", {"image_shape": (1, 4, 4)})
    assert report.ok and report.prior == "gmm(image_shape=(1, 4, 4))"


def test_cli_check_prior_passes(capsys):
    assert main(["check-prior", "gan-mnist", "gmm"]) == 0
    out = capsys.readouterr().out
    assert "gan-mnist: OK" in out and "PASS  generator.range" in out
    assert "gmm(image_shape=(1, 8, 8)): OK" in out and "gmm(image_shape=(3, 4, 4)): OK" in out
    assert "3 passed, 0 failed, 0 skipped" in out


def test_cli_check_prior_unknown_name(capsys):
    assert main(["check-prior", "gmx"]) == 2
    err = capsys.readouterr().err
    assert "unknown prior 'gmx'" in err and "did you mean 'gmm'" in err and "Traceback" not in err


def test_cli_unknown_name_points_at_a_plugin_that_failed_to_register(capsys, fresh_registry):
    class Typo:
        @invgen.hookimpl
        def register_priors(self, register):
            register("typo-prior", IIDGaussian, capabilities=("denoisr",))

    invgen.plugin_manager().register(Typo(), name="typo-plugin")
    with pytest.warns(RuntimeWarning, match="typo-plugin"):
        assert main(["check-prior", "typo-prior"]) == 2
    err = capsys.readouterr().err
    assert "unknown prior 'typo-prior'" in err
    assert "plugin 'typo-plugin'" in err and "unknown capability 'denoisr' (did you mean 'denoiser'?)" in err


def test_cli_check_prior_usage_errors(capsys):
    assert main(["check-prior"]) == 2
    assert "give prior names or --all" in capsys.readouterr().err
    assert main(["check-prior", "gmm", "--option", "image_shape"]) == 2
    assert "--option expects KEY=VALUE" in capsys.readouterr().err


def test_cli_check_prior_failure_exits_1_without_traceback(capsys, fresh_registry):
    invgen.plugin_manager().register(_FakePlugin(), name="fake-plugin")
    assert main(["check-prior", "fake-tanh", "fake-needs-path", "-q"]) == 1
    captured = capsys.readouterr()
    assert "fake-tanh: FAILED" in captured.out and "FAIL  generator.range" in captured.out
    assert "FAIL  build" in captured.out and "Traceback" not in captured.out + captured.err
    assert main(["check-prior", "gmm", "--option", "image_shape=[1, 4, 4]"]) == 0
    assert "gmm(image_shape=[1, 4, 4]): OK" in capsys.readouterr().out


# -- the plugin guide and its examples run as written ---------------------------------------------------------------
DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def doc_examples() -> dict[str, str]:
    """The python blocks of docs/plugins.md that start with ``# example: NAME``."""
    blocks = re.findall(r"```python\n# example: (\w+)\n(.*?)```", DOCS.read_text(), re.S)
    return dict(blocks)


def test_docs_name_every_capability_contract_and_helper():
    text = DOCS.read_text()
    for word in ("denoise(x, sigma)", "score(x, sigma=0.0)", "log_prob(x)", "decode(z)", "latent_shape",
                 "log_prob_kind", "image_shape", "sigma_min", "invgen check-prior", "check_prior(",
                 "load_pretrained", "export_weights", "register_weight_folders", "examples"):  # fmt: skip
        assert word in text, word
    assert set(doc_examples()) == {"generator", "score"}


@pytest.mark.parametrize("name", ["generator", "score"])
def test_docs_examples_run(name, fresh_registry, capsys):
    exec(compile(doc_examples()[name], f"docs/plugins.md example {name}", "exec"), {"__name__": f"docs_{name}"})
    out = capsys.readouterr().out
    if name == "generator":
        assert "tiny-generator: OK (" in out
    else:
        assert "failed log_density.score" in out and "opposite sign" in out


@pytest.mark.parametrize("script", ["generator_plugin.py", "score_plugin.py"])
def test_plugin_example_scripts(script, tmp_path, fresh_registry, capsys):
    spec = importlib.util.spec_from_file_location(f"example_{script[:-3]}", EXAMPLES / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the score example registers its own module as the plugin
    try:
        spec.loader.exec_module(module)
        assert module.main(["--smoke", "--out", str(tmp_path)]) == 0
    finally:
        del sys.modules[spec.name]
    out = capsys.readouterr().out
    assert ": OK (" in out and "metrics " in out
    assert module.PRIOR_NAME not in invgen.list_priors(), "the example must unregister its plugin"
    if script == "generator_plugin.py":
        folder = tmp_path / module.PRIOR_NAME
        assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()


@pytest.mark.parametrize(
    ("path", "cls", "kwargs"),
    [
        ("plugin_template/invgen_template/__init__.py", "IIDGaussianPrior", {}),
        ("custom_prior_plugin.py", "SmoothGaussianPrior", {"size": 8}),
    ],
)
def test_example_priors_conform(path, cls, kwargs):
    spec = importlib.util.spec_from_file_location(f"example_{cls}", EXAMPLES / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    prior = getattr(module, cls)(**kwargs)
    report = check_prior(prior, declared=tuple(prior.capabilities))
    assert report.ok, str(report)
