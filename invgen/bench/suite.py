"""Benchmark suites: YAML files naming datasets x tasks x priors x solvers x seeds, validated before any work.

A suite file (see ``benchmarks/suites/*.yaml``)::

    name: quick                       # [a-z0-9_-]
    description: a smoke benchmark
    seeds: [0]                        # noise and solver seeds (default [0])
    samples: 4                        # N posterior samples per observation (default 1)
    batch: 16                         # images per solver call (default 16)
    metrics: [psnr, ssim, lpips]      # registered metrics (default [psnr, ssim])
    grid_images: 4                    # images whose samples are kept for the report's grids (default 4)
    datasets:
      - name: mnist                   # a registered dataset
        options: {split: test}        # its factory's options
        count: 8                      # the first 8 (or ids: [...]; start: k)
        transform: {modcrop: 4, crop: 28, resize: 32, gray: false, rgb: false}
        priors: auto                  # or a list: [diffusion-mnist, {name: gmm, options: {...}}]
    tasks:
      - name: sr4                     # a label, unique in the suite
        operator: superres            # a registered operator
        options: {scale: 4}
        noise: {name: gaussian, std: 0.05}   # or a number (a Gaussian std)
        datasets: [mnist]             # optional: only these datasets
    solvers:
      - pinv                          # a name, or:
      - name: dps
        options: {steps: 100}
        label: dps-100                # optional (default: the name); unique in the suite
        tasks: [sr4]                  # optional: only these tasks
        priors: [diffusion-mnist]     # optional: only these priors
      - name: latent_map
        optional: true                # skipped (not an error) when not installed or when it runs in no cell

Cells are the product dataset x task x solver x seed, with, for a solver that needs a prior, every prior of the
dataset whose capabilities meet the solver's needs (a baseline that needs none runs once, prior ``none``).
Combinations that cannot run (a solver that needs a linear or SVD operator on a task that has none, a task limited
to other datasets) are skipped and listed by :meth:`Suite.plan`; a component that ends up in no cell at all is an
error. ``priors: auto`` takes every registered prior that declares the dataset in its ``datasets`` metadata.

Every error names the file, the line and the reason (:class:`SuiteError`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invgen.errors import InvgenError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
TOP_KEYS = {"name", "description", "seeds", "samples", "batch", "metrics", "grid_images", "device", "datasets",
            "tasks", "solvers"}  # fmt: skip
DATASET_KEYS = {"name", "options", "count", "ids", "start", "transform", "priors", "label"}
TASK_KEYS = {"name", "operator", "options", "noise", "datasets"}
SOLVER_KEYS = {"name", "options", "label", "tasks", "priors", "datasets", "optional"}
TRANSFORM_KEYS = {"modcrop", "crop", "resize", "gray", "rgb"}


class SuiteError(InvgenError, ValueError):
    """A suite file is invalid: the message names the file, the line and the reason."""


# -- YAML with line numbers -----------------------------------------------------------------------------------------
class _Located:
    """Line numbers of every node of a YAML document, by path of keys and indices."""

    def __init__(self, source: str, text: str) -> None:
        import yaml

        self.source = source
        self.lines: dict[tuple[Any, ...], int] = {}
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise SuiteError(f"{source}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: Any, path: tuple[Any, ...]) -> None:
        import yaml

        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                self.lines[(*path, key, "<key>")] = k.start_mark.line + 1
                self._walk(v, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self._walk(v, (*path, i))

    def error(self, path: tuple[Any, ...], reason: str) -> SuiteError:
        p = tuple(path)
        while p and p not in self.lines:
            p = p[:-1]
        line = self.lines.get(p)
        where = f"{self.source}:{line}" if line else self.source
        return SuiteError(f"{where}: {reason}")


# -- resolved parts -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSpec:
    label: str
    name: str
    options: dict[str, Any]
    count: int | None
    ids: tuple[str, ...] | None
    start: int
    transform: dict[str, Any]
    priors: tuple[PriorSpec, ...]
    shape: tuple[int, int, int] | None

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "options": self.options,
            "count": self.count,
            "ids": list(self.ids) if self.ids is not None else None,
            "start": self.start,
            "transform": self.transform,
        }

    def load(self) -> Any:
        """The selected, transformed dataset (reads the data)."""
        import invgen

        ds = invgen.dataset(self.name, **self.options)
        if self.ids is not None:
            ds = ds.select(ids=list(self.ids))
        elif self.count is not None or self.start:
            ds = ds.select(count=self.count, start=self.start)
        if self.transform:
            ds = ds.transform(**self.transform)
        return ds


@dataclass(frozen=True)
class PriorSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.name if not self.options else f"{self.name}{json.dumps(self.options, sort_keys=True)}"

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "options": self.options}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    operator: str
    options: dict[str, Any]
    noise: dict[str, Any]
    datasets: tuple[str, ...] | None

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "operator": self.operator, "options": self.options, "noise": self.noise}

    def build(self) -> Any:
        """The operator with its noise model."""
        import invgen

        return invgen.operator(self.operator, **self.options, noise=dict(self.noise))


@dataclass(frozen=True)
class SolverSpec:
    name: str
    label: str
    options: dict[str, Any]
    needs: tuple[str, ...]
    operators: str  # "any", "linear", "svd" or "inpaint"
    tasks: tuple[str, ...] | None
    priors: tuple[str, ...] | None
    datasets: tuple[str, ...] | None
    optional: bool = False

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "options": self.options}


@dataclass(frozen=True)
class Cell:
    """One benchmark cell: a dataset, a task, a prior (``None`` for baselines), a solver and a seed."""

    suite: str
    dataset: DatasetSpec
    task: TaskSpec
    prior: PriorSpec | None
    solver: SolverSpec
    seed: int
    n_samples: int
    metrics: tuple[str, ...]

    def key(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset.label,
            "task": self.task.name,
            "prior": self.prior.key if self.prior else "none",
            "solver": self.solver.name,
            "label": self.solver.label,
            "seed": self.seed,
            "n_samples": self.n_samples,
        }

    def config(self, observations: str = "") -> dict[str, Any]:
        """Everything that determines the cell's results (hashed into its id)."""
        return {
            "dataset": self.dataset.config(),
            "task": self.task.config(),
            "prior": self.prior.config() if self.prior else None,
            "solver": self.solver.config(),
            "seed": self.seed,
            "n_samples": self.n_samples,
            "metrics": list(self.metrics),
            "observations": observations,
        }

    def cell_id(self, observations: str = "") -> str:
        return canonical_hash(self.config(observations))[:16]

    @property
    def title(self) -> str:
        k = self.key()
        return f"{k['dataset']}/{k['task']}/{k['prior']}/{k['label']}/seed{k['seed']}"


@dataclass
class Suite:
    """A validated suite: its parts and its cells."""

    name: str
    description: str
    source: str
    seeds: tuple[int, ...]
    samples: int
    batch: int
    metrics: tuple[str, ...]
    grid_images: int
    device: str
    datasets: tuple[DatasetSpec, ...]
    tasks: tuple[TaskSpec, ...]
    solvers: tuple[SolverSpec, ...]
    cells: list[Cell]
    skipped: list[tuple[str, str]]

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seeds": list(self.seeds),
            "samples": self.samples,
            "metrics": list(self.metrics),
            "datasets": [d.config() for d in self.datasets],
            "tasks": [t.config() for t in self.tasks],
            "solvers": [s.config() for s in self.solvers],
            "priors": sorted({p.key for d in self.datasets for p in d.priors}),
        }

    @property
    def hash(self) -> str:
        return canonical_hash(self.config())[:16]

    def plan(self) -> str:
        """A readable list of the cells and of the skipped combinations."""
        lines = [f"suite {self.name}: {len(self.cells)} cells ({self.source})"]
        lines += [f"  {c.title}" for c in self.cells]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} combinations:")
            lines += [f"  {what}: {why}" for what, why in self.skipped]
        return "\n".join(lines)


def canonical_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# -- loading --------------------------------------------------------------------------------------------------------
def find_suite(name_or_path: str | os.PathLike) -> Path:
    """A suite file: a path, or the name of a shipped suite in ``benchmarks/suites``."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = Path(__file__).resolve().parents[2] / "benchmarks" / "suites"
    for cand in (shipped / f"{name_or_path}.yaml", shipped / f"{name_or_path}.yml"):
        if cand.is_file():
            return cand
    known = sorted(q.stem for q in shipped.glob("*.yaml")) if shipped.is_dir() else []
    raise SuiteError(f"no suite file {str(name_or_path)!r} (neither a file nor a shipped suite: {known})")


def load_suite(
    path_or_text: str | os.PathLike, *, text: str | None = None, prior: dict[str, Any] | None = None
) -> Suite:
    """Read and validate a suite (a file path, a shipped suite's name, or ``text=`` with a source name).

    ``prior`` (``{"name": ..., "options": {...}}``) replaces the priors of every dataset: how a suite written for
    a user's checkpoint (e.g. ``ffhq256`` with ``adm``) runs with another one (``invgen bench run SUITE --prior``).
    """
    if text is None:
        path = find_suite(path_or_text)
        source, text = str(path), path.read_text()
    else:
        source = str(path_or_text)
    return parse_suite(text, source, prior=prior)


def parse_suite(text: str, source: str = "<suite>", prior: dict[str, Any] | None = None) -> Suite:
    """Validate a suite's YAML text; raise :class:`SuiteError` with the line of the first problem.

    ``prior``: as in :func:`load_suite`.
    """
    from invgen import registry

    doc = _Located(source, text)
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error((), f"a suite is a mapping with keys {sorted(TOP_KEYS)}, got {type(data).__name__}")
    if prior is not None:
        for d in data.get("datasets") or []:
            if isinstance(d, dict):
                d["priors"] = [dict(prior)]
    _keys(doc, data, (), TOP_KEYS, "suite")
    for req in ("name", "datasets", "tasks", "solvers"):
        if req not in data:
            raise doc.error((), f"missing required key {req!r}")
    name = _name(doc, data["name"], ("name",), "suite name")
    description = str(data.get("description", ""))
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(_is_int(s) and s >= 0 for s in seeds):
        raise doc.error(("seeds",), f"seeds: expected a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise doc.error(("seeds",), f"seeds: repeated values in {seeds}")
    samples = _pos_int(doc, data.get("samples", 1), ("samples",), "samples")
    batch = _pos_int(doc, data.get("batch", 16), ("batch",), "batch")
    grid_images = data.get("grid_images", 4)
    if not _is_int(grid_images) or grid_images < 0:
        raise doc.error(("grid_images",), f"grid_images: expected an integer >= 0, got {grid_images!r}")
    device = str(data.get("device", "cpu"))
    metrics = data.get("metrics", ["psnr", "ssim"])
    if not isinstance(metrics, list) or not metrics:
        raise doc.error(("metrics",), f"metrics: expected a non-empty list of metric names, got {metrics!r}")
    for i, m in enumerate(metrics):
        _lookup(doc, "metrics", m, ("metrics", i))

    # datasets
    datasets: list[DatasetSpec] = []
    for i, d in enumerate(_list(doc, data["datasets"], ("datasets",), "datasets")):
        path = ("datasets", i)
        d = _named_entry(doc, d, path, DATASET_KEYS, "dataset")
        entry = _lookup(doc, "datasets", d["name"], (*path, "name"))
        options = _mapping(doc, d.get("options", {}), (*path, "options"), "options")
        if "ids" in d and ("count" in d or "start" in d):
            raise doc.error((*path, "ids"), "give either ids or count/start, not both")
        count = d.get("count")
        if count is not None:
            count = _pos_int(doc, count, (*path, "count"), "count")
        start = d.get("start", 0)
        if not _is_int(start) or start < 0:
            raise doc.error((*path, "start"), f"start: expected an integer >= 0, got {start!r}")
        ids = d.get("ids")
        if ids is not None:
            if not isinstance(ids, list) or not ids:
                raise doc.error((*path, "ids"), f"ids: expected a non-empty list, got {ids!r}")
            ids = tuple(str(x) for x in ids)
        transform = _mapping(doc, d.get("transform", {}), (*path, "transform"), "transform")
        _keys(doc, transform, (*path, "transform"), TRANSFORM_KEYS, "transform")
        shape = _transformed_shape(doc, entry.meta.get("shape"), transform, (*path, "transform"))
        label = _name(doc, d.get("label", d["name"]), (*path, "label"), "dataset label")
        channels = (
            shape[0]
            if shape is not None
            else 1
            if transform.get("gray")
            else 3
            if transform.get("rgb")
            else entry.meta.get("channels")
        )
        priors = _dataset_priors(doc, d.get("priors", []), (*path, "priors"), d["name"], shape, channels)
        datasets.append(DatasetSpec(label, d["name"], options, count, ids, start, transform, priors, shape))
    _unique(
        doc,
        [d.label for d in datasets],
        [("datasets", i) for i in range(len(datasets))],
        "dataset label (set 'label' to tell them apart)",
    )
    dataset_labels = {d.label for d in datasets}

    # tasks
    tasks: list[TaskSpec] = []
    for i, t in enumerate(_list(doc, data["tasks"], ("tasks",), "tasks")):
        path = ("tasks", i)
        if not isinstance(t, dict):
            raise doc.error(path, f"a task is a mapping with keys {sorted(TASK_KEYS)}, got {t!r}")
        _keys(doc, t, path, TASK_KEYS, "task")
        for req in ("name", "operator"):
            if req not in t:
                raise doc.error(path, f"a task needs {req!r}")
        tname = _name(doc, t["name"], (*path, "name"), "task name")
        _lookup(doc, "operators", t["operator"], (*path, "operator"))
        options = _mapping(doc, t.get("options", {}), (*path, "options"), "options")
        noise = t.get("noise", 0.0)
        if isinstance(noise, (int, float)) and not isinstance(noise, bool):
            noise = {"name": "gaussian", "std": float(noise)}
        noise = _mapping(doc, noise, (*path, "noise"), "noise")
        noise = {"name": "gaussian", **noise}
        only = _subset(doc, t.get("datasets"), (*path, "datasets"), dataset_labels, "dataset")
        spec = TaskSpec(tname, t["operator"], options, noise, only)
        try:
            op = spec.build()
        except Exception as exc:
            raise doc.error(path, f"task {tname!r}: cannot build operator {t['operator']!r}: {exc}") from None
        for ds in datasets:
            if ds.shape is not None and (only is None or ds.label in only):
                try:
                    op.output_shape((1, *ds.shape))
                except Exception as exc:
                    raise doc.error(
                        path, f"task {tname!r} does not apply to dataset {ds.label!r} of shape {ds.shape}: {exc}"
                    ) from None
        tasks.append(spec)
    _unique(doc, [t.name for t in tasks], [("tasks", i) for i in range(len(tasks))], "task name")
    task_names = {t.name for t in tasks}
    all_priors = {p.name for d in datasets for p in d.priors}

    # solvers
    solvers: list[SolverSpec] = []
    solver_paths: list[tuple[Any, ...]] = []
    skipped: list[tuple[str, str]] = []
    for i, s in enumerate(_list(doc, data["solvers"], ("solvers",), "solvers")):
        path = ("solvers", i)
        s = _named_entry(doc, s, path, SOLVER_KEYS, "solver")
        optional = s.get("optional", False)
        if not isinstance(optional, bool):
            raise doc.error((*path, "optional"), f"optional: expected true or false, got {optional!r}")
        if optional and s["name"] not in registry.entries("solvers"):
            skipped.append((str(s["name"]), "optional solver not installed"))
            continue
        entry = _lookup(doc, "solvers", s["name"], (*path, "name"))
        options = _mapping(doc, s.get("options", {}), (*path, "options"), "options")
        try:
            entry.create(**options)
        except (TypeError, ValueError) as exc:
            raise doc.error((*path, "options"), f"solver {s['name']!r}: {exc}") from None
        label = _name(doc, s.get("label", s["name"]), (*path, "label"), "solver label")
        spec = SolverSpec(
            s["name"],
            label,
            options,
            tuple(entry.meta.get("needs", ())),
            str(entry.meta.get("operators", "any")),
            _subset(doc, s.get("tasks"), (*path, "tasks"), task_names, "task"),
            _subset(doc, s.get("priors"), (*path, "priors"), all_priors, "prior of the suite's datasets"),
            _subset(doc, s.get("datasets"), (*path, "datasets"), dataset_labels, "dataset"),
            optional,
        )
        solvers.append(spec)
        solver_paths.append(path)
    _unique(doc, [s.label for s in solvers], solver_paths, "solver label (set 'label' to tell them apart)")

    # cells
    cells: list[Cell] = []
    ops = {t.name: t.build() for t in tasks}
    used_solvers: set[str] = set()
    used_priors: set[tuple[str, str]] = set()
    for ds in datasets:
        for task in tasks:
            if task.datasets is not None and ds.label not in task.datasets:
                continue
            op = ops[task.name]
            for sv in solvers:
                if (sv.tasks is not None and task.name not in sv.tasks) or (
                    sv.datasets is not None and ds.label not in sv.datasets
                ):
                    continue
                why = operator_support(sv, op)
                if why:
                    skipped.append((f"{ds.label}/{task.name}/{sv.label}", why))
                    continue
                if not sv.needs:
                    candidates: list[PriorSpec | None] = [None]
                else:
                    candidates = []
                    for p in ds.priors:
                        if sv.priors is not None and p.name not in sv.priors:
                            continue
                        caps = set(registry.get("priors", p.name).meta.get("capabilities", ()))
                        if set(sv.needs) <= caps:
                            candidates.append(p)
                        else:
                            missing = sorted(set(sv.needs) - caps)
                            skipped.append((f"{ds.label}/{task.name}/{p.key}/{sv.label}", f"prior lacks {missing}"))
                    if not candidates:
                        skipped.append(
                            (f"{ds.label}/{task.name}/{sv.label}", f"no prior of the dataset offers {list(sv.needs)}")
                        )
                for p in candidates:
                    used_solvers.add(sv.label)
                    if p is not None:
                        used_priors.add((ds.label, p.key))
                    for seed in seeds:
                        cells.append(Cell(name, ds, task, p, sv, int(seed), samples, tuple(metrics)))
    for sv, path in zip(solvers, solver_paths):
        if sv.label not in used_solvers and not sv.optional:
            reasons = "; ".join(f"{w}: {r}" for w, r in skipped if w.endswith("/" + sv.label)) or "no task applies"
            raise doc.error(path, f"solver {sv.label!r} runs in no cell ({reasons}; mark it optional: true to allow)")
    return Suite(
        name, description, source, tuple(int(s) for s in seeds), samples, batch, tuple(metrics), int(grid_images),
        device, tuple(datasets), tuple(tasks), tuple(solvers), cells, skipped,
    )  # fmt: skip


def operator_support(solver: SolverSpec, operator: Any) -> str | None:
    """Why ``solver`` cannot run with ``operator`` (None when it can)."""
    if solver.operators == "inpaint" and getattr(operator, "name", None) not in ("inpaint", "identity"):
        return f"needs a pixel-mask operator (inpaint or identity), got {operator.name!r}"
    if solver.operators in ("linear", "svd") and not getattr(operator, "linear", False):
        return f"needs a linear operator, {operator.name!r} is nonlinear"
    if solver.operators == "svd" and not getattr(operator, "has_svd", False):
        return f"needs an operator with an SVD, {operator.name!r} has none"
    return None


# -- small validators -----------------------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pos_int(doc: _Located, v: Any, path: tuple[Any, ...], what: str) -> int:
    if not _is_int(v) or v < 1:
        raise doc.error(path, f"{what}: expected an integer >= 1, got {v!r}")
    return int(v)


def _name(doc: _Located, v: Any, path: tuple[Any, ...], what: str) -> str:
    if not isinstance(v, str) or not NAME_RE.match(v):
        raise doc.error(path, f"{what}: expected lower-case letters, digits, '-', '_' or '.', got {v!r}")
    return v


def _list(doc: _Located, v: Any, path: tuple[Any, ...], what: str) -> list[Any]:
    if not isinstance(v, list) or not v:
        raise doc.error(path, f"{what}: expected a non-empty list, got {v!r}")
    return v


def _mapping(doc: _Located, v: Any, path: tuple[Any, ...], what: str) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise doc.error(path, f"{what}: expected a mapping, got {v!r}")
    return dict(v)


def _named_entry(doc: _Located, v: Any, path: tuple[Any, ...], allowed: set[str], what: str) -> dict[str, Any]:
    """A suite entry given as a name or as a mapping with a ``name`` and only ``allowed`` keys."""
    if isinstance(v, str):
        v = {"name": v}
    if not isinstance(v, dict):
        raise doc.error(path, f"a {what} is a name or a mapping, got {v!r}")
    _keys(doc, v, path, allowed, what)
    if "name" not in v:
        raise doc.error(path, f"a {what} needs a 'name'")
    return v


def _keys(doc: _Located, d: dict[str, Any], path: tuple[Any, ...], allowed: set[str], what: str) -> None:
    import difflib

    for k in d:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; allowed: {', '.join(sorted(allowed))}"
            raise doc.error((*path, k, "<key>"), f"unknown {what} key {k!r}{hint}")


def _unique(doc: _Located, names: list[str], paths: list[tuple[Any, ...]], what: str) -> None:
    seen: set[str] = set()
    for n, path in zip(names, paths):
        if n in seen:
            name, _, hint = what.partition(" (")
            raise doc.error(path, f"repeated {name} {n!r}" + (f" ({hint}" if hint else ""))
        seen.add(n)


def _subset(doc: _Located, v: Any, path: tuple[Any, ...], known: set[str], what: str) -> tuple[str, ...] | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v:
        raise doc.error(path, f"expected a non-empty list of {what} names, got {v!r}")
    for i, x in enumerate(v):
        if x not in known:
            raise doc.error((*path, i), f"{x!r} is not a {what} of this suite (it has {', '.join(sorted(known))})")
    return tuple(v)


def _lookup(doc: _Located, kind: str, name: Any, path: tuple[Any, ...]) -> Any:
    from invgen import registry
    from invgen.errors import UnknownNameError

    if not isinstance(name, str):
        raise doc.error(path, f"expected a {kind[:-1]} name, got {name!r}")
    try:
        return registry.get(kind, name)
    except UnknownNameError as exc:
        raise doc.error(path, str(exc)) from None


def _transformed_shape(
    doc: _Located, shape: Any, transform: dict[str, Any], path: tuple[Any, ...]
) -> tuple[int, int, int] | None:
    def hw(v: Any, key: str) -> tuple[int, int]:
        if _is_int(v) and v > 0:
            return int(v), int(v)
        if isinstance(v, list) and len(v) == 2 and all(_is_int(a) and a > 0 for a in v):
            return int(v[0]), int(v[1])
        raise doc.error((*path, key), f"{key}: expected a size > 0 or [height, width], got {v!r}")

    modcrop = transform.get("modcrop")
    if modcrop is not None and (not _is_int(modcrop) or modcrop < 1):
        raise doc.error((*path, "modcrop"), f"modcrop: expected an integer >= 1, got {modcrop!r}")
    crop = hw(transform["crop"], "crop") if transform.get("crop") is not None else None
    resize = hw(transform["resize"], "resize") if transform.get("resize") is not None else None
    for key in ("gray", "rgb"):
        if not isinstance(transform.get(key, False), bool):
            raise doc.error((*path, key), f"{key}: expected true or false, got {transform[key]!r}")
    if transform.get("gray") and transform.get("rgb"):
        raise doc.error(path, "gray and rgb exclude each other")
    if shape is None:
        if resize is not None:
            c = 1 if transform.get("gray") else 3 if transform.get("rgb") else None
            return (c, *resize) if c is not None else None
        if crop is not None and (transform.get("gray") or transform.get("rgb")):
            return (1 if transform.get("gray") else 3, *crop)
        return None
    c, h, w = (int(a) for a in shape)
    if modcrop:
        h, w = h - h % modcrop, w - w % modcrop
    if crop is not None:
        if crop[0] > h or crop[1] > w:
            raise doc.error((*path, "crop"), f"crop {crop} is larger than the images ({h}x{w})")
        h, w = crop
    if resize is not None:
        h, w = resize
    if transform.get("gray"):
        c = 1
    if transform.get("rgb"):
        c = 3
    return (c, h, w)


def _dataset_priors(
    doc: _Located,
    v: Any,
    path: tuple[Any, ...],
    dataset: str,
    shape: tuple[int, int, int] | None,
    channels: int | None = None,
) -> tuple[PriorSpec, ...]:
    from invgen import registry

    if v == "auto":
        found = []
        for n, e in sorted(registry.entries("priors").items()):
            if dataset in e.meta.get("datasets", ()):
                ishape, chans = e.meta.get("image_shape"), e.meta.get("channels")
                fits = shape is None or ishape is None or tuple(ishape) == tuple(shape)
                if fits and (channels is None or chans is None or chans == channels):
                    found.append(PriorSpec(n))
        return tuple(found)
    if v is None:
        return ()
    if not isinstance(v, list):
        raise doc.error(path, f"priors: expected 'auto' or a list of prior names / mappings, got {v!r}")
    out: list[PriorSpec] = []
    for i, p in enumerate(v):
        if isinstance(p, str):
            p = {"name": p}
        if not isinstance(p, dict) or "name" not in p or set(p) - {"name", "options"}:
            raise doc.error((*path, i), f"a prior is a name or {{name: ..., options: {{...}}}}, got {p!r}")
        entry = _lookup(doc, "priors", p["name"], (*path, i))
        ishape = entry.meta.get("image_shape")
        if shape is not None and ishape is not None and tuple(ishape) != tuple(shape):
            raise doc.error(
                (*path, i),
                f"prior {p['name']!r} is defined on images of shape {tuple(ishape)}, but dataset {dataset!r} gives "
                f"{tuple(shape)} (add a transform: crop/resize/gray/rgb)",
            )
        out.append(PriorSpec(p["name"], _mapping(doc, p.get("options", {}), (*path, i, "options"), "options")))
    keys = [p.key for p in out]
    if len(set(keys)) != len(keys):
        raise doc.error(path, f"repeated prior in {keys}")
    return tuple(out)
