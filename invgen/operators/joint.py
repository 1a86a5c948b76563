"""Joint observations: several operators observe one image, each with its own noise model.

``y = (y_1, ..., y_K)`` with ``y_k = A_k(x) + n_k``, the ``n_k`` independent given ``x``, so

    log p(y | x) = sum_k log p_k(y_k | x).

**The observation is one flat tensor** ``(B, m_1 + ... + m_K)``: each part's ``(B, ...)`` output flattened and
concatenated in order. Not a tuple, because every seam that carries ``y`` carries one tensor ``(B, ...)``:
:func:`invgen.solve` checks it, casts it to the working dtype and moves it; the solvers repeat it over the N
samples (``stack_batch``) and subtract ``A(x)`` from it; the residual flags of :func:`invgen.api.flag_samples`, the
frozen observations of the benchmarks and ``Operator.check_observation`` all see ``y.shape[0]`` items of one
tensor. A flat vector passes all of them unchanged, as compressed sensing's ``(B, m)`` already does.
:meth:`JointOperator.join` and :meth:`JointOperator.split` go between the parts' observations and the flat one.

**Noise.** When every part has the same noise model (equal configs) the joint has that model itself, e.g.
``GaussianNoise(s)``, and every solver uses it as for any operator (closed forms included, for linear parts).
Otherwise the joint's noise is a :class:`JointNoise`: it samples and scores each slice with its part's model
(``log_likelihood`` is the sum of the parts'), and for Gaussian parts of different stds ``s_k`` it *whitens*:
``whiten(t)`` multiplies slice ``k`` by ``w_k = s_ref / s_k`` and ``gaussian_std()`` is ``s_ref`` (the first part's
std; the smallest positive one if the first is noiseless; a noiseless part gets ``w = 1``), so that

    log p(y | x) = -||whiten(y - A(x))||^2 / (2 s_ref^2) + const

and the solvers that build a Gaussian residual themselves (DPS's ``||y - A(x0)||``, RED-diff's reference data term,
annealed Langevin, the Langevin and DAPS step sizes from ``std^2 / ||A||^2``) stay exact by whitening it.

A joint of linear parts is linear (:class:`LinearJointOperator`: ``A^T y = sum_k A_k^T y_k``, ``A^+`` by conjugate
gradients on the normal equations); with one nonlinear part it is nonlinear and differentiable where its parts are.

Example:
    >>> op = joint([invgen.operator("inpaint", mask="box", noise=invgen.noise("gaussian", std=0.01)),
    ...             invgen.operator("superres", scale=2, noise=invgen.noise("gaussian", std=0.05))])
    >>> y = op.join([y_inpaint, y_lowres])  # (B, C*H*W + C*H*W/4)
    >>> post = invgen.solve(y, op, "diffusion-cifar10", solver="dps")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.errors import RangeError, ShapeError
from invgen.operators.base import LinearOperator, Operator, check_bound_input, conjugate_gradient
from invgen.operators.noise import NoiseModel


class JointNoise(NoiseModel):
    """The noise of a joint observation: part ``k``'s model on slice ``k`` of a flat ``(B, m)`` observation.

    Args:
        parts: one noise model per part, in order.

    The slice sizes (per item) are set by the joint operator (:meth:`bind`) once it knows its input shape.
    See the module docstring for :meth:`whiten` and :meth:`gaussian_std`.
    """

    name = "joint"

    def __init__(self, parts: Sequence[NoiseModel]) -> None:
        super().__init__()
        self.parts = torch.nn.ModuleList(parts)
        self.sizes: tuple[int, ...] | None = None
        stds = [p.gaussian_std() for p in parts]
        known = [s for s in stds if s is not None]
        positive = [s for s in known if s > 0]
        self.gaussian = len(known) == len(stds)
        first = known[0] if known else 0.0
        self.reference = first if first > 0 else (min(positive) if positive else 0.0)
        self.weights = tuple(self.reference / s if (s is not None and s > 0) else 1.0 for s in stds)
        self.whitened = any(w != 1.0 for w in self.weights)

    def bind(self, sizes: Sequence[int]) -> JointNoise:
        """Set the per-item sizes of the slices (one per part). Returns ``self``."""
        if len(sizes) != len(self.parts):
            raise ShapeError(f"joint noise: {len(self.parts)} parts, got {len(sizes)} slice sizes")
        self.sizes = tuple(int(n) for n in sizes)
        return self

    def _slices(self, t: Tensor, name: str) -> list[Tensor]:
        if self.sizes is None:
            raise ShapeError(
                "joint noise: the slice sizes are not known yet; apply the joint operator to an image first"
            )
        m = sum(self.sizes)
        if t.dim() != 2 or t.shape[1] != m:
            raise ShapeError(f"joint noise: {name}: expected a flat joint observation (B, {m}), got {tuple(t.shape)}")
        return list(torch.split(t, self.sizes, dim=1))

    def sample(self, ax: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw each slice from its part's model. Shape: ``(B, m)`` -> ``(B, m)``."""
        slices = self._slices(ax, "A(x)")
        return torch.cat([p.sample(a, generator=generator) for p, a in zip(self.parts, slices)], dim=1)

    def log_likelihood(self, y: Tensor, ax: Tensor) -> Tensor:
        """The sum over parts of each part's log-likelihood of its slice. Shape: ``(B, m)``, ``(B, m)`` -> ``(B,)``."""
        total = None
        for k, (p, yk, ak) in enumerate(zip(self.parts, self._slices(y, "y"), self._slices(ax, "A(x)"))):
            try:
                ll = p.log_likelihood(yk, ak)
            except RangeError as exc:
                raise RangeError(f"joint noise, part {k} ({p.name}): {exc}") from exc
            total = ll if total is None else total + ll
        assert total is not None
        return total

    def gaussian_std(self) -> float | None:
        """``s_ref`` when every part is Gaussian (module docstring), else None."""
        return self.reference if self.gaussian else None

    @property
    def std(self) -> float:
        """``s_ref`` (the first part's std when it is positive), for code that reads a Gaussian model's ``std``;
        an ``AttributeError`` when a part is not Gaussian. Solvers go through :meth:`gaussian_std` and
        :meth:`whiten`: ``std`` alone does not describe a joint model."""
        if not self.gaussian:
            raise AttributeError("joint noise: a part is not Gaussian, so the joint model has no std")
        return self.reference

    def whiten(self, t: Tensor) -> Tensor:
        """Slice ``k`` of ``t`` times ``w_k`` (``t`` itself when every weight is 1). Shape: ``(B, m)`` -> ``(B, m)``."""
        if not self.whitened:
            return t
        parts = self._slices(t, "t")
        return torch.cat([w * s if w != 1.0 else s for w, s in zip(self.weights, parts)], dim=1)

    def config(self) -> dict:
        return {"name": self.name, "parts": [p.config() for p in self.parts]}

    def extra_repr(self) -> str:
        return f"weights={self.weights}" if self.whitened else ""


def _build_part(spec: Any, k: int, noise: NoiseModel | None) -> Operator:
    """An operator from an operator or a config dict (``{"name": ..., **options}``), with ``noise`` if given."""
    if isinstance(spec, Operator):
        if noise is None:
            return spec
        spec = copy.deepcopy(spec)  # never change the caller's operator
        spec.noise = noise
        return spec
    if isinstance(spec, dict):
        cfg = dict(spec)
        name = cfg.pop("name", None)
        if not isinstance(name, str):
            raise TypeError(f"joint: operators[{k}]: a config dict needs its operator 'name', got {spec!r}")
        if noise is not None:
            cfg["noise"] = noise
        from invgen.api import operator as build  # the registry's factories; api does not import this module

        return build(name, **cfg)
    raise TypeError(f"joint: operators[{k}]: expected an invgen operator or its config dict, got {type(spec).__name__}")


def _build_parts(operators: Any, noise: NoiseModel | None) -> list[Operator]:
    if isinstance(operators, (Operator, dict, str, Tensor)) or not isinstance(operators, Iterable):
        raise TypeError(
            f"joint: operators must be a list of operators (or their config dicts), got {type(operators).__name__}"
        )
    if noise is not None and not isinstance(noise, NoiseModel):
        raise TypeError(f"joint: noise: expected an invgen noise model (invgen.noise(...)), got {type(noise).__name__}")
    parts = [_build_part(spec, k, noise) for k, spec in enumerate(operators)]
    if not parts:
        raise ValueError("joint: operators is empty; give at least one operator")
    return parts


def _joint_noise(parts: Sequence[Operator]) -> NoiseModel:
    configs = [p.noise.config() for p in parts]
    if all(c == configs[0] for c in configs):
        return copy.deepcopy(parts[0].noise)
    return JointNoise([p.noise for p in parts])


class JointOperator(Operator):
    """Several operators observing one image; the observation is the flat concatenation of theirs (module docstring).

    Build it with :func:`joint` (or ``invgen.operator("joint", operators=[...])``), which picks
    :class:`LinearJointOperator` when every part is linear.

    Args:
        operators: the parts, operators or their config dicts (``{"name": "inpaint", "mask": "box", ...}``).
        shape: the input shape ``(C, H, W)``; default: that of the first input (or of :meth:`join`'s first image
            observation). Needed by ``input_shape`` (``invgen.solve`` reads the image shape from ``y``).
        noise: if given, the noise model of every part (replacing theirs); default: each part keeps its own.

    Shape:
        x: ``(B, C, H, W)``; y: ``(B, m)`` with ``m`` the sum of the parts' per-item output sizes.
    """

    name = "joint"
    linear = False

    def __init__(
        self, operators: Sequence[Operator | dict], *, shape: tuple[int, int, int] | None = None, noise: Any = None
    ) -> None:
        parts = _build_parts(operators, noise)
        super().__init__(_joint_noise(parts))
        self.parts = torch.nn.ModuleList(parts)
        self.shape: tuple[int, int, int] | None = None
        self.sizes: tuple[int, ...] | None = None
        self._part_shapes: list[tuple[int, ...]] = []
        if shape is not None:
            self.bind_shape(tuple(shape))

    # -- shapes -------------------------------------------------------------------------------------------------
    def bind_shape(self, x_shape: tuple[int, ...]) -> JointOperator:
        shape = tuple(int(v) for v in x_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ShapeError(f"{self.name}: shape must be (C, H, W) of positive ints, got {tuple(x_shape)}")
        if self.shape is not None:
            if shape != self.shape:
                raise ShapeError(
                    f"{self.name}: the operator was built for inputs {self.shape}, cannot bind it to {shape}"
                )
            return self
        for p in self.parts:
            p.bind_shape(shape)
        self._part_shapes = [tuple(int(v) for v in p.output_shape((1, *shape))[1:]) for p in self.parts]
        self.sizes = tuple(math.prod(s) for s in self._part_shapes)
        if isinstance(self.noise, JointNoise):
            self.noise.bind(self.sizes)
        self.shape = (shape[0], shape[1], shape[2])
        return self

    def _known_shape(self, y_shape: tuple[int, ...]) -> tuple[int, int, int]:
        if self.shape is None:
            raise ShapeError(
                f"{self.name}: the input shape is not known yet; pass shape=(C, H, W), call bind_shape, or apply the "
                "operator to an image first"
            )
        return self.shape

    def check_input(self, x: Tensor, name: str = "x", clean: bool = False) -> Tensor:
        return check_bound_input(self.name, self.shape, x, name, clean)

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        b = int(x_shape[0])
        return (b, sum(math.prod(p.output_shape(tuple(x_shape))[1:]) for p in self.parts))

    def input_shape(self, y_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(y_shape) != 2:
            raise ShapeError(
                f"{self.name}: expected a flat joint observation (B, m) (make it with op.join([...])), got shape "
                f"{tuple(y_shape)}"
            )
        return (int(y_shape[0]), *self._known_shape(tuple(y_shape)))

    # -- the operator -------------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x, "x")
        if self.shape is None:
            self.bind_shape(tuple(x.shape[1:]))
        b = x.shape[0]
        return torch.cat([p(x).reshape(b, -1) for p in self.parts], dim=1)

    def log_likelihood(self, y: Tensor, x: Tensor) -> Tensor:
        """``sum_k log p_k(y_k | x)`` per item, ``(B,)``."""
        return self.noise.log_likelihood(y, self.forward(x))

    # -- between the parts' observations and the flat one -------------------------------------------------------
    def split(self, y: Tensor) -> list[Tensor]:
        """The parts' observations ``[(B, *out_1), ..., (B, *out_K)]`` of a flat joint observation ``(B, m)``."""
        check_tensor(y, "y")
        self._known_shape(tuple(y.shape))
        assert self.sizes is not None
        m = sum(self.sizes)
        if y.dim() != 2 or y.shape[1] != m:
            raise ShapeError(f"{self.name}: expected a flat joint observation (B, {m}), got {tuple(y.shape)}")
        b = y.shape[0]
        return [t.reshape(b, *s) for t, s in zip(torch.split(y, self.sizes, dim=1), self._part_shapes)]

    def join(self, observations: Sequence[Tensor]) -> Tensor:
        """The flat joint observation ``(B, m)`` of the parts' observations, in order.

        A part's observation of batch 1 is repeated to the batch ``B`` of the others (an exemplar's embedding shared
        by every item). If the input shape is not known yet, it is read from the first part that can tell it from
        its observation (``input_shape`` of an image-to-image part). The result has the first observation's dtype.
        """
        obs = list(observations)
        if len(obs) != len(self.parts):
            raise ShapeError(f"{self.name}: expected {len(self.parts)} observations (one per part), got {len(obs)}")
        for k, t in enumerate(obs):
            check_tensor(t, f"observations[{k}]")
        if self.shape is None:
            for p, t in zip(self.parts, obs):
                try:
                    x_shape = tuple(p.input_shape(tuple(t.shape)))
                except ShapeError:
                    continue
                if len(x_shape) == 4:
                    self.bind_shape(x_shape[1:])
                    break
        self._known_shape(())
        b = max(int(t.shape[0]) for t in obs)
        flat = []
        for k, (t, s) in enumerate(zip(obs, self._part_shapes)):
            if tuple(t.shape[1:]) != s or t.shape[0] not in (1, b):
                raise ShapeError(
                    f"{self.name}: observations[{k}] ({self.parts[k].name}): expected shape "
                    f"(B, {', '.join(map(str, s))}) with B = 1 or {b}, got {tuple(t.shape)}"
                )
            flat.append(t.expand(b, *s).reshape(b, -1).to(obs[0].dtype))
        return torch.cat(flat, dim=1)

    # -- configuration ------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """``{"name": "joint", "operators": [...], "noise": ..., "shape": ...}``: a shared noise model is given once
        (and the parts' configs leave it out); parts with different noise keep theirs and ``noise`` is left out."""
        configs = [p.config() for p in self.parts]
        noises = [c.get("noise") for c in configs]
        out: dict[str, Any] = {"name": self.name}
        if noises[0] is not None and all(n == noises[0] for n in noises):
            for c in configs:
                c.pop("noise", None)
            out["operators"] = configs
            out["noise"] = noises[0]
        else:
            out["operators"] = configs
        if self.shape is not None:
            out["shape"] = self.shape
        return out

    def extra_repr(self) -> str:
        return f"shape={self.shape}" if self.shape is not None else ""


class LinearJointOperator(JointOperator, LinearOperator):
    """A joint of linear operators: ``A^T y = sum_k A_k^T y_k`` and ``A^+ y`` by conjugate gradients on the normal
    equations ``A^T A x = A^T y`` from 0 (consistent, so CG converges to the minimum-norm least-squares solution)."""

    linear = True
    has_svd = False

    def adjoint(self, y: Tensor) -> Tensor:
        out: Tensor | None = None
        for p, yk in zip(self.parts, self.split(y)):
            a = p.adjoint(yk)
            out = a if out is None else out + a
        assert out is not None
        return out

    def pinv(self, y: Tensor) -> Tensor:
        tol = 1e-12 if y.dtype == torch.float64 else 10 * float(torch.finfo(y.dtype).eps)
        return conjugate_gradient(self.gram, self.adjoint(y), tol=tol, max_iter=1000)


def joint(
    operators: Sequence[Operator | dict], *, shape: tuple[int, int, int] | None = None, noise: Any = None
) -> JointOperator:
    """The joint observation of several operators (module docstring): ``invgen.operator("joint", operators=[...])``.

    Args:
        operators: the parts, operators or their config dicts, each with its own noise model.
        shape: the input shape ``(C, H, W)`` (default: that of the first input).
        noise: if given, the noise model of every part (replacing theirs).

    Returns:
        A :class:`LinearJointOperator` when every part is linear, else a :class:`JointOperator`.

    Example:
        >>> op = joint([{"name": "inpaint", "mask": "box"}, {"name": "superres", "scale": 2}], shape=(1, 8, 8))
        >>> op.output_shape((2, 1, 8, 8))
        (2, 80)
    """
    parts = _build_parts(operators, noise)
    cls = LinearJointOperator if all(p.linear for p in parts) else JointOperator
    return cls(parts, shape=shape)
