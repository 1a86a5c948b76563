"""The ``invgen`` command line: ``invgen plugins``, ``invgen demo``, ``invgen solve``, ``invgen train``,
``invgen bench``, ``invgen check-prior``, ``invgen --version``.

Heavy modules (torch and the plugins) are imported only by the subcommand that needs them, so ``invgen --help``
and ``invgen --version`` answer at once.

Every command shares one error path (:func:`main`): an invgen error, an ``OSError`` (a missing, unreadable or
unwritable file), an image that cannot be decoded, a SQLite or JSON error, or a ``TypeError``/``ValueError`` from the
library's own checks becomes one line on stderr, ``invgen COMMAND: message`` naming the file or option, and exit
status 2 (1 for a solver that diverged, a run that failed rather than a bad input). ``invgen --debug COMMAND ...``
also prints the traceback. Output folders are checked for writability before any work.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("invgen")
    except PackageNotFoundError:  # running from a source tree
        from invgen import __version__

        return __version__


def cmd_plugins(args: argparse.Namespace) -> int:
    """List priors (capabilities, usable solvers), solvers (needs), operators and metrics, with their origin."""
    from invgen import registry

    priors = registry.entries("priors")
    solvers = registry.entries("solvers")
    operators = registry.entries("operators")
    metrics = registry.entries("metrics")
    datasets = registry.entries("datasets")
    trainers = registry.entries("trainers")
    converters = registry.entries("converters")

    def usable(caps: frozenset[str]) -> list[str]:
        return sorted(n for n, e in solvers.items() if set(e.meta.get("needs", ())) <= caps)

    report = {
        "version": _version(),
        "priors": {
            n: {
                "capabilities": list(e.meta.get("capabilities", ())),
                "solvers": usable(frozenset(e.meta.get("capabilities", ()))),
                "distribution": e.distribution,
                "plugin": e.plugin,
                "description": e.meta.get("description", ""),
            }
            for n, e in sorted(priors.items())
        },
        "solvers": {
            n: {
                "needs": list(e.meta.get("needs", ())),
                "distribution": e.distribution,
                "plugin": e.plugin,
                "description": e.meta.get("description", ""),
            }
            for n, e in sorted(solvers.items())
        },
        "operators": {
            n: {
                "linear": bool(e.meta.get("linear", False)),
                "distribution": e.distribution,
                "plugin": e.plugin,
                "description": e.meta.get("description", ""),
            }
            for n, e in sorted(operators.items())
        },
        "metrics": {n: {"distribution": e.distribution, "plugin": e.plugin} for n, e in sorted(metrics.items())},
        "datasets": {n: {"distribution": e.distribution, "plugin": e.plugin} for n, e in sorted(datasets.items())},
        "trainers": {n: {"distribution": e.distribution, "plugin": e.plugin} for n, e in sorted(trainers.items())},
        "converters": {n: {"distribution": e.distribution, "plugin": e.plugin} for n, e in sorted(converters.items())},
        "failed": [
            {"plugin": f.plugin, "distribution": f.distribution, "stage": f.stage, "error": f.error}
            for f in registry.plugin_failures()
        ],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0

    print(f"invgen {report['version']}\n")
    print("Priors")
    for n, p in report["priors"].items():
        caps = ", ".join(p["capabilities"]) or "-"
        print(f"  {n:<24} capabilities: {caps}")
        print(f"  {'':<24} solvers: {', '.join(p['solvers']) or '-'}")
        print(f"  {'':<24} from {p['distribution']} (plugin {p['plugin']})")
    if not report["priors"]:
        print("  (none installed)")
    print("\nSolvers")
    for n, s in report["solvers"].items():
        needs = ", ".join(s["needs"]) or "nothing (baseline)"
        print(f"  {n:<24} needs: {needs:<28} from {s['distribution']}  {s['description']}")
    print("\nOperators")
    for n, o in report["operators"].items():
        kind = "linear" if o["linear"] else "nonlinear"
        print(f"  {n:<24} {kind:<10} from {o['distribution']}  {o['description']}")
    for title in ("metrics", "datasets", "trainers", "converters"):
        if report[title]:
            print(f"\n{title.capitalize()}")
            for n, m in report[title].items():
                print(f"  {n:<24} from {m['distribution']}")
    if report["failed"]:
        print("\nPlugins that failed and were skipped")
        for f in report["failed"]:
            print(f"  {f['plugin']} ({f['distribution']}) at {f['stage']}: {f['error']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo (see :mod:`invgen.demo`)."""
    _check_out(args.out, "--out")
    from invgen.demo import run

    return run(out=args.out, seed=args.seed, quick=args.quick)


def _run_registered(kind: str, command: str, name: str, argv: list[str]) -> int:
    """Run a registered trainer or converter: an object with ``description``, ``add_arguments`` and ``run``."""
    from invgen import registry

    tool = registry.get(kind, name).create()
    parser = _Parser(prog=f"invgen {command} {name}", description=tool.description)
    tool.add_arguments(parser)
    options = parser.parse_args(argv)
    _check_out(getattr(options, "out", None), "--out")
    return int(tool.run(options) or 0)


def cmd_train(args: argparse.Namespace) -> int:
    """Run a registered trainer: ``invgen train NAME [trainer options]``."""
    return _run_registered("trainers", "train", args.trainer, args.options)


def cmd_convert(args: argparse.Namespace) -> int:
    """Run a registered checkpoint converter: ``invgen convert NAME [converter options]``."""
    return _run_registered("converters", "convert", args.converter, args.options)


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line, like every other error of the command."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _finite_float(strict: bool):
    """An argparse type: a finite float > 0 (``strict``) or >= 0."""
    import math

    bound = "> 0" if strict else ">= 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (strict and value == 0):
            raise argparse.ArgumentTypeError(f"expected a finite number {bound}, got {text!r}")
        return value

    return parse


_positive_float = _finite_float(strict=True)
_nonnegative_float = _finite_float(strict=False)


def _memory_size(text: str) -> str:
    from invgen.estimate import parse_bytes

    try:
        parse_bytes(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a memory size > 0 such as 64G, 512MiB or 2e9 bytes (or off), got {text!r}"
        ) from None
    return text


def _check_out(path: object, option: str) -> None:
    """An output folder must be writable before any work starts (nothing is created here)."""
    if path is not None:
        from invgen.files import check_output_dir

        check_output_dir(str(path), option)


def _parse_value(text: str) -> object:
    """``--option k=v`` values: JSON when it parses (numbers, true/false, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def cmd_solve(args: argparse.Namespace) -> int:
    """``invgen solve``: sample the posterior of one image and write samples, mean, std, contact sheet, metrics."""
    import logging

    from invgen.errors import OptionError

    parsed: dict[str, dict[str, Any]] = {"option": {}, "prior_option": {}}
    raw: dict[str, dict[str, str]] = {"option": {}, "prior_option": {}}
    for flag, into in parsed.items():
        for item in getattr(args, flag) or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise OptionError(f"--{flag.replace('_', '-')} expects KEY=VALUE, got {item!r}", option=flag)
            into[key] = _parse_value(value)
            raw[flag][key] = value
    prior_name, prior_path = split_prior(args.prior)
    if prior_path and "path" in parsed["prior_option"]:
        raise OptionError(f"--prior {args.prior} and --prior-option path=... both give a path; give one", option="path")
    parsed["prior_option"].update(prior_path)
    _check_out(args.out, "--out")  # before the prior loads or the solver runs
    from invgen.checks import check_device

    check_device(args.device, "--device")
    from invgen.tasks import TaskOptions, solve_image

    solver_options = parsed["option"]
    if args.steps is not None:
        solver_options["steps"] = args.steps
    options = TaskOptions(
        scale=args.scale, sr_kernel=args.sr_kernel, mask=args.mask, box_size=args.box_size, ratio=args.ratio,
        mask_seed=args.mask_seed, blur=args.blur, blur_sigma=args.blur_sigma, blur_size=args.blur_size,
        threshold=args.threshold, noise=args.noise, exemplar=args.exemplar, tau_scale=args.tau_scale,
    )  # fmt: skip
    # what solve() logs on the "invgen" logger (the default solver it chose, a large problem's estimated time and
    # memory) is printed as it happens; the progress bar over the network calls goes to stderr
    log = logging.getLogger("invgen")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level, propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        info = solve_image(
            args.image, args.task, prior_name, args.out, solver=args.solver, n_samples=args.n, seed=args.seed,
            degrade=args.degrade, reference=args.reference, options=options, solver_options=solver_options,
            prior_options=parsed["prior_option"], device=args.device, progress=not args.no_progress,
            max_pixels=args.max_pixels, max_memory=args.max_memory,
        )  # fmt: skip
    except OptionError as exc:  # name the flag that gave the option, as it was typed
        flag = "prior_option" if exc.owner.startswith("prior") else "option"
        if exc.option in raw[flag]:
            given = f"--{flag.replace('_', '-')} {exc.option}={raw[flag][exc.option]}"
            raise OptionError(f"{given}: {exc}", option=exc.option, owner=exc.owner) from exc
        raise
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate
    line = f"{info['solver']['name']} on {info['prior']}: {info['n_samples']} samples, {info['nfe']} NFE, "
    line += f"{info['seconds']:.2f} s -> {args.out}"
    if "metrics" in info:
        m = info["metrics"]["mean"]
        line += " | mean: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items())
    print(line)
    for warning in info["warnings"]:  # samples far off the data: flagged, left out of the mean and std
        print(f"warning: {warning}")
    return 0


def cmd_check_prior(args: argparse.Namespace) -> int:
    """``invgen check-prior NAME [NAME ...] | --all``: the conformance checks of registered priors
    (:func:`invgen.testing.check_registered`); exit 1 when a check fails, 2 for a usage error or an unknown name."""
    from invgen import registry
    from invgen.errors import InvgenError

    if bool(args.names) == bool(args.all):
        print("invgen check-prior: give prior names or --all (not both)", file=sys.stderr)
        return 2
    options: dict[str, Any] = {}
    for item in args.option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"invgen check-prior: --option expects KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        options[key] = _parse_value(value)
    names = registry.names("priors") if args.all else list(dict.fromkeys(args.names))
    failures = [f for f in registry.plugin_failures() if f.stage in ("import", "register_priors")]
    notes = [f"plugin {f.plugin!r} ({f.distribution}) failed at {f.stage} and was skipped: {f.error}" for f in failures]
    try:
        entries = {name: registry.get("priors", name) for name in names}
    except InvgenError as exc:
        print(f"invgen check-prior: {exc}", file=sys.stderr)
        for note in notes:  # a prior that is missing because its plugin failed (e.g. a misspelled capability)
            print(f"  {note}", file=sys.stderr)
        return 2

    import torch

    from invgen.testing.check_prior import check_registered, required_options

    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for name, entry in entries.items():
        needed = required_options(entry.factory)
        if args.all and not options and not entry.meta.get("examples") and needed:
            flags = " ".join(f"--option {o}=..." for o in needed)
            print(f"{name}: SKIPPED (its factory needs {', '.join(needed)}: invgen check-prior {name} {flags})")
            counts["skipped"] += 1
            continue
        try:
            reports = check_registered(name, options or None, generator=torch.Generator().manual_seed(args.seed))
        except Exception as exc:  # the checks report a prior's errors; this is a bug of the kit's own
            print(f"invgen check-prior: {name}: the checks raised {type(exc).__name__}: {exc}", file=sys.stderr)
            counts["failed"] += 1
            continue
        for report in reports:
            if args.quiet:
                print("\n".join([report.summary(), *(f"  {r}" for r in report.failed)]))
            else:
                print(report)
            counts["passed" if report.ok else "failed"] += 1
    print("\ncheck-prior: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if args.all and notes:
        print("\n".join(["not checked:", *(f"  {note}" for note in notes)]))
    return 1 if counts["failed"] else 0


def split_prior(text: str) -> tuple[str, dict[str, str]]:
    """``NAME`` or ``NAME:PATH`` (a prior built from a folder, e.g. ``adm:weights/ffhq256``) -> name and options."""
    name, sep, path = text.partition(":")
    if not sep:
        return text, {}
    if not name or not path:
        raise ValueError(f"--prior: expected NAME or NAME:PATH (e.g. adm:ffhq256-adm), got {text!r}")
    return name, {"path": path}


def cmd_bench(args: argparse.Namespace) -> int:
    """``invgen bench validate|plan|degrade|run|report``."""
    from invgen.bench.suite import SuiteError, load_suite

    try:
        if args.bench_command == "report":
            from invgen.bench.report import write_report

            out = args.out or (str(args.db) + ".report")
            _check_out(out, "--out")
            written = write_report(args.db, out, suite=args.suite)
            n = sum(len(v) for v in written.values())
            print(f"wrote {n} files to {out} ({', '.join(f'{len(v)} {k}' for k, v in written.items())})")
            return 0
        prior = None
        if getattr(args, "prior", None):
            name, options = split_prior(args.prior)
            prior = {"name": name, "options": options} if options else {"name": name}
        suite = load_suite(args.suite, prior=prior)
    except SuiteError as exc:
        print(f"invgen bench: {exc}", file=sys.stderr)
        return 2
    if args.bench_command == "validate":
        print(
            f"{suite.source}: valid suite {suite.name!r} with {len(suite.cells)} cells ({len(suite.skipped)} skipped)"
        )
        return 0
    if args.bench_command == "plan":
        print(suite.plan())
        return 0
    from invgen.bench.runner import default_data_dir, freeze_suite, run_suite

    db = args.db or f"{suite.name}.sqlite"
    args.db = db  # named by the error path's message on a database error
    data_dir = args.frozen or default_data_dir(db)
    if args.bench_command == "degrade" or not Path(data_dir).is_dir():  # a run only reads what is frozen already
        _check_out(data_dir, "--frozen")
    if args.bench_command == "run":
        from invgen.checks import check_device

        check_device(args.device or suite.device, "--device" if args.device else f"the suite's device ({suite.source})")
        if not Path(db).exists():  # a new database: its folder must take it (the store reports an existing one's state)
            _check_out(Path(db).parent, "--db")
        _check_out(args.report, "--report")
    if args.bench_command == "degrade":
        frozen = freeze_suite(suite, data_dir, progress=True)
        print(f"{len(frozen)} frozen observation sets in {data_dir}")
        return 0
    summary = run_suite(
        suite, db, data_dir=data_dir, executor=args.executor, device=args.device, progress=not args.no_progress,
        ray_address=args.ray_address,
    )  # fmt: skip
    print(
        f"run {summary.run_id}: {summary.cells} cells, {summary.blocks_run} blocks run ({summary.images_run} images), "
        f"{summary.blocks_skipped} already done, {summary.seconds:.1f} s -> {summary.db}"
    )
    if args.report:
        from invgen.bench.report import write_report

        write_report(db, args.report, suite=suite.name)
        print(f"report in {args.report}")
    return 0


class _VersionAction(argparse.Action):
    """``--version``, reading the installed version only when asked (``importlib.metadata`` is slow to import)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        sys.stdout.write(f"invgen {_version()}\n")  # where argparse's own version action prints
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="invgen",
        description="Image inverse problems as posterior sampling with generative priors. Errors are one line on "
        "stderr naming the file or option, with exit status 2 (1: a solver diverged); --debug adds the traceback.",
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("--debug", action="store_true", help="on an error, also print the full traceback")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("plugins", help="list priors, solvers, operators and metrics, and where each came from")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("demo", help="run the demonstration and write a gallery and a metrics table")
    p.add_argument("--out", default="invgen-demo", help="output folder (default: ./invgen-demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--quick", action="store_true", help="fewer steps (for smoke tests)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "train", help="train a prior: invgen train NAME --help lists the trainer's options", add_help=False
    )
    p.add_argument("trainer", help="a registered trainer (see invgen plugins)")
    p.add_argument("options", nargs=argparse.REMAINDER, help="options of the trainer")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "convert",
        help="convert a foreign checkpoint (e.g. adm: a guided-diffusion .pt) into a safetensors weight folder: "
        "invgen convert NAME --help lists the converter's options",
        add_help=False,
    )
    p.add_argument("converter", help="a registered converter (see invgen plugins)")
    p.add_argument("options", nargs=argparse.REMAINDER, help="options of the converter")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "solve",
        help="sample the posterior of one image: samples, mean, std map, contact sheet (and metrics.json)",
        description="Sample p(x | y) for one image file. IMAGE is the observation y, or with --degrade a clean image "
        "that the task's operator degrades first (seeded). Writes sample_XXX.png, mean.png, std.png (divided by its "
        "max, stored in info.json), observation.png, contact_sheet.png, info.json and, with a reference (or "
        "--degrade), metrics.json. Prints the solver it uses when --solver is not given (chosen by what the "
        "operator offers), samples flagged as far off the data, and for a large problem (over a million pixels per "
        "network call) the estimated time and memory; a progress bar follows the network calls. Exits 1 if the "
        "solver diverged (the message names the option to change), 2 for a usage error.",
    )
    p.add_argument(
        "--image",
        required=True,
        help="PNG/JPEG: the observation, or the clean image with --degrade; skimage:NAME reads a scikit-image sample "
        "photo (camera, astronaut, coffee, chelsea, coins, moon, ...: offline, they ship with the dependency)",
    )
    p.add_argument(
        "--task", required=True, choices=("colorize", "sr", "inpaint", "sketch", "denoise", "deblur", "exemplar")
    )
    p.add_argument(
        "--prior",
        required=True,
        help="a registered prior (invgen plugins), or NAME:PATH for one built from a folder (adm:DIR, diffusers:DIR)",
    )
    p.add_argument(
        "--solver",
        help="a registered solver (default: chosen by what the prior and the operator offer, and printed: ddnm at 50 "
        "steps for a linear operator with an SVD, diffpir at 50 for blur and sketch; see docs/defaults.md)",
    )
    p.add_argument("-n", type=_positive_int, default=8, help="posterior samples (default 8)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--degrade", action="store_true", help="IMAGE is clean: apply the task's operator and noise first")
    p.add_argument("--reference", help="a clean image to score against (metrics.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=_positive_int, help="the solver's steps")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="a solver option (repeatable)")
    p.add_argument(
        "--prior-option",
        action="append",
        metavar="KEY=VALUE",
        help="an option of the prior's factory (repeatable), e.g. precision=bfloat16 for the diffusion priors",
    )
    p.add_argument("--noise", type=_nonnegative_float, default=0.05, help="Gaussian noise std of y on the [0, 1] scale")
    p.add_argument("--scale", type=int, default=4, help="sr: the factor")
    p.add_argument("--sr-kernel", default="block", choices=("block", "bicubic"), help="sr: the downsampling")
    p.add_argument(
        "--mask", default="box", help="inpaint, exemplar: box, random, freeform, half, or a mask file (1 = seen)"
    )
    p.add_argument(
        "--exemplar",
        metavar="FILE",
        help="exemplar: the image whose content fills the masked region (any size, gray or RGB; centre-cropped to the "
        "box's aspect ratio and resized; gray is repeated to RGB, RGB becomes BT.601 luma for a gray prior)",
    )
    p.add_argument(
        "--tau-scale",
        type=_positive_float,
        default=1.0,
        help="exemplar: factor on the calibrated tau of the exemplar likelihood (< 1 pulls harder; default 1)",
    )
    p.add_argument("--box-size", type=float, help="inpaint box: pixels (>= 1) or a fraction of the side")
    p.add_argument("--ratio", type=float, default=0.7, help="inpaint random: the missing fraction")
    p.add_argument("--mask-seed", type=int, default=0, help="seed of random/freeform masks and motion kernels")
    p.add_argument("--blur", default="gaussian", help="deblur: gaussian, motion or a kernel file")
    p.add_argument("--blur-sigma", type=float, default=1.5, help="deblur gaussian: the std in pixels")
    p.add_argument("--blur-size", type=int, help="deblur: the kernel size")
    p.add_argument("--threshold", type=float, default=0.2, help="sketch: the edge threshold of the operator")
    p.add_argument("--device", default="cpu", help="where to solve: cpu, cuda, cuda:1, mps (checked first)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar over the network calls")
    p.add_argument(
        "--max-pixels",
        type=_positive_int,
        help="refuse input images with more pixels than this (default: INVGEN_MAX_PIXELS, else 8192 x 8192 = "
        "67108864); checked on the file's header, before decoding",
    )
    p.add_argument(
        "--max-memory",
        metavar="SIZE",
        type=_memory_size,
        help="refuse a solve whose estimated memory exceeds SIZE (e.g. 64G; off: no limit; default: "
        "INVGEN_MAX_MEMORY, else the device's total memory), checked before any allocation",
    )
    p.set_defaults(func=cmd_solve)

    p = sub.add_parser(
        "check-prior",
        help="check registered priors against their capabilities' contracts (shapes, ranges, score vs log_prob, ...)",
        description="Build each prior (each of its registration's examples, updated with --option) and run "
        "invgen.testing.check_prior on it: declared vs implemented capabilities, image_shape, the generator's range, "
        "log_prob's shape and its agreement with the score, the denoiser's error reduction. Prints one report per "
        "prior; exits 1 if a check fails.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="registered priors (see invgen plugins)")
    p.add_argument("--all", action="store_true", help="every registered prior (those needing options are skipped)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="a factory option (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    p.add_argument("-q", "--quiet", action="store_true", help="print only each prior's summary and failed checks")
    p.set_defaults(func=cmd_check_prior)

    p = sub.add_parser("bench", help="benchmark suites: validate, plan, degrade, run, report")
    bench = p.add_subparsers(dest="bench_command", metavar="ACTION", required=True)
    for action, text in (
        ("validate", "check a suite file (line and reason of the first problem)"),
        ("plan", "list the cells of a suite and the skipped combinations"),
        ("degrade", "freeze the suite's observations y (once; every solver then reads the same y)"),
        ("run", "run or resume a suite into a SQLite database"),
    ):
        q = bench.add_parser(action, help=text)
        q.add_argument("suite", help="a suite file or a shipped suite's name (benchmarks/suites)")
        q.add_argument(
            "--prior",
            help="run every dataset with this prior instead of the suite's: NAME, or NAME:PATH for a prior built from "
            "a folder (e.g. adm:ffhq256-adm, a converted guided-diffusion checkpoint)",
        )
        if action in ("degrade", "run"):
            q.add_argument("--db", help="result database (default: ./SUITE.sqlite)")
            q.add_argument("--frozen", help="folder of frozen observations (default: DB.frozen)")
        if action == "run":
            q.add_argument("--executor", choices=("local", "ray"), default="local")
            q.add_argument("--ray-address", help="Ray cluster address (default: a local instance or RAY_ADDRESS)")
            q.add_argument("--device", help="override the suite's device (cpu, cuda)")
            q.add_argument("--no-progress", action="store_true", help="no progress bar")
            q.add_argument("--report", help="write the report to this folder after the run")
        q.set_defaults(func=cmd_bench)
    q = bench.add_parser("report", help="write markdown/CSV tables and PNG plots and grids from a database")
    q.add_argument("db", help="result database")
    q.add_argument("--out", help="output folder (default: DB.report)")
    q.add_argument("--suite", help="only this suite's cells")
    q.set_defaults(func=cmd_bench)
    return parser


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after the command too (``invgen solve ... --debug``), without overriding one given before it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                if name not in ("train", "convert"):  # their own options follow the name, REMAINDER takes them all
                    child.add_argument(
                        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
                    )
                _add_debug(child)


def _error_status(exc: BaseException) -> int | None:
    """The exit status of an error the command reports in one line, or None for one it does not handle (a bug:
    its traceback is printed)."""
    import sqlite3

    from invgen.errors import DivergenceError, InvgenError

    if isinstance(exc, DivergenceError):
        return 1  # the run failed, not the command line: the message says which option to change
    if isinstance(exc, (InvgenError, OSError, sqlite3.Error, json.JSONDecodeError, TypeError, ValueError)):
        return 2
    if type(exc).__name__ == "DecompressionBombError" and type(exc).__module__.startswith("PIL"):
        return 2
    return None


def _error_line(exc: BaseException, args: argparse.Namespace) -> str:
    """One line that says what went wrong, naming the file or option where the exception alone does not."""
    import sqlite3

    from invgen.errors import InvgenError

    text = str(exc) or type(exc).__name__
    filename = getattr(exc, "filename", None)
    if isinstance(exc, sqlite3.Error):
        db = getattr(args, "db", None)
        text = f"{db}: database error ({type(exc).__name__}): {text}" if db else f"database error: {text}"
    elif isinstance(exc, json.JSONDecodeError):
        text = f"invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    elif isinstance(exc, OSError) and not isinstance(exc, InvgenError) and exc.strerror:
        names = " -> ".join(str(f) for f in (filename, getattr(exc, "filename2", None)) if f is not None)
        text = f"{names}: {exc.strerror}" if names else exc.strerror  # without Python's "[Errno 2]"
    elif type(exc).__name__ == "DecompressionBombError":
        text = f"an image above PIL's decompression-bomb limit: {text}"
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    _add_debug(parser)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        status = _error_status(exc)
        if status is None:
            raise
        if getattr(args, "debug", False):
            import traceback

            traceback.print_exception(exc)
        print(f"invgen {args.command}: {_error_line(exc, args)}", file=sys.stderr)
        return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
