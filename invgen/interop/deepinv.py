"""deepinv interop: deepinv physics as invgen operators, deepinv denoisers as invgen priors, and back.

Three adapters, each a plain function (deepinv is imported when one is called, never by ``import invgen``):

* :func:`operator_from_physics` wraps a ``deepinv.physics.LinearPhysics`` into a :class:`DeepinvOperator`, an invgen
  :class:`~invgen.operators.base.LinearOperator`: ``forward = physics.A``, ``adjoint = physics.A_adjoint``, ``pinv =
  physics.A_dagger`` where deepinv's is a closed form that a probe confirms to be the minimum-norm least-squares
  solution (else invgen's conjugate gradients), and invgen's SVD interface where the physics is a
  ``DecomposablePhysics`` whose ``U``, ``V`` are orthonormal and whose singular values (``mask``) are real. The noise
  model maps ``ZeroNoise`` and ``GaussianNoise(sigma)`` to :class:`~invgen.operators.noise.GaussianNoise`, and
  ``PoissonNoise(gain, normalize=True)`` to ``PoissonNoise(rate=1 / gain)``; any other model is refused.
* :func:`prior_from_denoiser` makes a deepinv denoiser ``D(x, sigma)`` an invgen prior with the ``denoiser`` and
  ``score`` (Tweedie: ``(D(x, sigma) - x) / sigma^2``) capabilities.
* :func:`to_deepinv_denoiser` makes an invgen prior with the ``denoiser`` capability a ``deepinv.models.Denoiser``,
  usable in deepinv's own algorithms (``deepinv.sampling.DiffPIR``, ``deepinv.optim`` plug-and-play).

Conventions (the same in both libraries, so nothing is rescaled): images are ``(B, C, H, W)`` in [0, 1], and a
denoiser's ``sigma`` is the noise standard deviation on that scale (a float or a ``(B,)`` tensor). deepinv's
complex-valued physics (single-coil ``MRI``) act on real tensors whose channel dimension holds the real and
imaginary parts, ``(B, 2, H, W)``; wrapped as they are, they are real linear maps of those tensors. With
``real_images=True`` the operator instead takes real single-channel images ``(B, 1, H, W)`` and feeds the physics
``(x, 0)`` (the adjoint keeps the real part), which is what a real-valued image prior needs.

A wrapped physics runs in its own floating dtype (that of its buffers; make it float64 with ``physics.double()``, or
``dtype=torch.float64`` for ``CompressedSensing``): inputs are cast to it and results back to the input's dtype. The
physics is used as it is, never copied: updating its parameters (``physics.update(mask=...)``) updates the operator,
but its noise model is read once, when the operator is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from invgen.checks import as_sigma, check_image, check_tensor
from invgen.errors import DeviceError, MissingCapabilityError, RangeError, ShapeError
from invgen.operators.base import LinearOperator, conjugate_gradient
from invgen.operators.noise import GaussianNoise, NoiseModel, PoissonNoise
from invgen.priors.base import Prior, capabilities_of

INSTALL_HINT = 'the deepinv adapters need the deepinv package: pip install "invgen[deepinv]"'
SQRT2 = math.sqrt(2.0)
DAGGER_CUTOFF = 1e-5  # DecomposablePhysics.A_dagger drops singular values at or below this (absolute)

__all__ = [
    "DeepinvDenoiserPrior",
    "DeepinvOperator",
    "import_deepinv",
    "noise_from_deepinv",
    "operator_from_physics",
    "prior_from_denoiser",
    "to_deepinv_denoiser",
]


def import_deepinv() -> Any:
    """Import deepinv, or raise an ImportError that says how to install it."""
    try:
        import deepinv
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return deepinv


def _module_dtype(module: torch.nn.Module) -> torch.dtype | None:
    """The widest real floating dtype of a module's parameters and buffers (complex ones count as their real part),
    or None for a module that holds none. deepinv's ``_device_holder`` placeholder does not count."""
    widest = None
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        if name.endswith("_device_holder") or not (t.is_floating_point() or t.is_complex()):
            continue
        d = t.real.dtype if t.is_complex() else t.dtype
        if widest is None or torch.finfo(d).bits > torch.finfo(widest).bits:
            widest = d
    return widest


def _module_device(module: torch.nn.Module) -> torch.device | None:
    for t in [*module.parameters(), *module.buffers()]:
        return t.device
    return None


def _single_value(value: Any, what: str) -> float:
    """A deepinv noise parameter (float or tensor) as one float; per-item values have no invgen counterpart."""
    t = torch.as_tensor(value).detach().reshape(-1)
    if t.numel() == 0 or not bool((t == t[0]).all()):
        raise ValueError(
            f"{what}: invgen noise models hold one value for every item, got {t.tolist()} (build one operator per "
            "noise level)"
        )
    return float(str(t[0].cpu().numpy()))  # the shortest decimal of the tensor's dtype: float32 0.02 gives 0.02


def noise_from_deepinv(noise_model: Any) -> NoiseModel:
    """The invgen noise model of a deepinv one.

    ``ZeroNoise`` (or None) -> ``GaussianNoise(0)``; ``GaussianNoise(sigma)`` -> ``GaussianNoise(sigma)`` (sigma is a
    standard deviation on the [0, 1] scale in both); ``PoissonNoise(gain, normalize=True)``, i.e. ``y = gain *
    Poisson(A x / gain)``, -> ``PoissonNoise(rate=1 / gain)``, invgen's ``y = Poisson(rate * A x) / rate``.

    Raises:
        TypeError: for any other noise model class (named in the message).
        ValueError: for per-item noise levels, or ``PoissonNoise(normalize=False)`` (raw counts, whose mean is
            ``A x / gain`` rather than ``A x``).
    """
    dinv = import_deepinv()
    p = dinv.physics
    kind = type(noise_model)
    if noise_model is None or kind is p.ZeroNoise:
        return GaussianNoise(0.0)
    if kind is p.GaussianNoise:
        return GaussianNoise(_single_value(noise_model.sigma, "deepinv GaussianNoise sigma"))
    if kind is p.PoissonNoise:
        if not bool(torch.as_tensor(noise_model.normalize)):
            raise ValueError(
                "deepinv PoissonNoise(normalize=False) gives raw counts Poisson(A x / gain), whose mean is not A x; "
                "invgen's Poisson model is y = Poisson(rate * A x) / rate: use normalize=True (then rate = 1 / gain), "
                "or multiply y by the gain"
            )
        return PoissonNoise(rate=1.0 / _single_value(noise_model.gain, "deepinv PoissonNoise gain"))
    raise TypeError(
        f"deepinv noise model {kind.__name__} has no invgen counterpart: invgen models Gaussian noise (deepinv "
        "GaussianNoise, ZeroNoise) and Poisson noise (deepinv PoissonNoise with normalize=True); pass noise= an "
        "invgen noise model to use another one"
    )


# -- real orthonormal coordinates of a real 2-D spectrum --------------------------------------------------------------
# deepinv's BlurFFT writes its SVD in rfft2 coordinates, view_as_real(rfft2(x, norm="ortho")): (..., H, W // 2 + 1, 2),
# more numbers than pixels and not orthonormal (each interior frequency stands for itself and its dropped conjugate).
# These two maps turn such a half spectrum into H * W real orthonormal coordinates and back: interior columns l give
# sqrt(2) Re X[k, l] at (k, l) and sqrt(2) Im X[k, l] at (k, W - l); the self-conjugate columns (0, and W / 2 for even
# W) are packed the same way along H, with Re X alone at the self-conjugate rows (0, and H / 2 for even H).


def _pack(re: Tensor, im: Tensor, w: int, scale: float = SQRT2) -> Tensor:
    """Half-spectrum parts ``(..., H, W // 2 + 1)`` -> ``(..., H, W)`` coordinates (``scale=1`` packs singular
    values: each coordinate gets the magnitude of its frequency)."""
    h = re.shape[-2]
    out = re.new_zeros(*re.shape[:-1], w)
    inner = (w - 1) // 2  # columns 1..inner: their conjugates are dropped by rfft
    if inner:
        out[..., 1 : inner + 1] = scale * re[..., 1 : inner + 1]
        out[..., w - inner :] = (scale * im[..., 1 : inner + 1]).flip(-1)
    hk = (h - 1) // 2
    for col in [0] + ([w // 2] if w % 2 == 0 else []):
        c_re, c_im = re[..., col], im[..., col]
        out[..., 0, col] = c_re[..., 0]
        if h % 2 == 0:
            out[..., h // 2, col] = c_re[..., h // 2]
        if hk:
            out[..., 1 : hk + 1, col] = scale * c_re[..., 1 : hk + 1]
            out[..., h - hk :, col] = (scale * c_im[..., 1 : hk + 1]).flip(-1)
    return out


def _unpack(z: Tensor) -> Tensor:
    """``(..., H, W)`` coordinates -> the Hermitian-consistent half spectrum ``(..., H, W // 2 + 1, 2)``."""
    h, w = z.shape[-2:]
    re = z.new_zeros(*z.shape[:-1], w // 2 + 1)
    im = torch.zeros_like(re)
    inner = (w - 1) // 2
    if inner:
        re[..., 1 : inner + 1] = z[..., 1 : inner + 1] / SQRT2
        im[..., 1 : inner + 1] = z[..., w - inner :].flip(-1) / SQRT2
    hk = (h - 1) // 2
    for col in [0] + ([w // 2] if w % 2 == 0 else []):
        c = z[..., col]
        re[..., 0, col] = c[..., 0]
        if h % 2 == 0:
            re[..., h // 2, col] = c[..., h // 2]
        if hk:
            a, b = c[..., 1 : hk + 1] / SQRT2, c[..., h - hk :].flip(-1) / SQRT2
            re[..., 1 : hk + 1, col], im[..., 1 : hk + 1, col] = a, b
            re[..., h - hk :, col], im[..., h - hk :, col] = a.flip(-1), -b.flip(-1)
    return torch.stack([re, im], dim=-1)


# -- the operator ----------------------------------------------------------------------------------------------------
class DeepinvOperator(LinearOperator):
    """A deepinv ``LinearPhysics`` as an invgen linear operator (see the module docstring and
    :func:`operator_from_physics`, which builds it).

    Attributes:
        physics: the wrapped deepinv physics (a submodule: ``op.to(device)`` moves it).
        real_images: whether invgen images are real ``(B, 1, H, W)`` fed to a complex physics as ``(x, 0)``.
        pinv_source: per input shape ``(C, H, W)``, ``"deepinv"`` (``physics.A_dagger``) or ``"cg"``, once known.

    Shape:
        x: ``(B, C, H, W)``; y: what ``physics.A`` gives. Per-item physics parameters (masks, filters given for
        ``B`` items: the leading dimension of its 4-D and larger buffers) apply to ``k * B`` stacked items in turn.
    """

    name = "deepinv"

    def __init__(
        self,
        physics: Any,
        input_shape: tuple[int, ...] | None = None,
        *,
        real_images: bool = False,
        noise: NoiseModel | None = None,
    ) -> None:
        dinv = import_deepinv()
        p = dinv.physics
        cls = type(physics).__name__
        if not isinstance(physics, p.Physics):
            raise TypeError(f"operator_from_physics: expected a deepinv physics, got {cls}")
        if not isinstance(physics, p.LinearPhysics):
            raise TypeError(
                f"operator_from_physics: {cls} is not a deepinv LinearPhysics; only linear physics can be wrapped "
                "(for a nonlinear forward model, write an invgen Operator whose forward calls physics.A)"
            )
        probe = torch.linspace(-1.0, 2.0, 12).reshape(1, 3, 2, 2)
        try:
            identity_sensor = torch.equal(physics.sensor(probe), probe)
        except Exception:  # a sensor model that cannot even take a small image batch is no identity
            identity_sensor = False
        if not identity_sensor:
            raise TypeError(
                f"operator_from_physics: {cls} has a sensor model (quantisation, saturation...), which makes it "
                "nonlinear; only physics whose sensor model is the identity can be wrapped"
            )
        super().__init__(noise if noise is not None else noise_from_deepinv(physics.noise_model))
        self.physics = physics
        self.real_images = bool(real_images)
        self.name = f"deepinv.{cls}"
        self._decomposable = isinstance(physics, p.DecomposablePhysics)
        dagger = getattr(type(physics), "A_dagger", None)
        closed = dagger is p.DecomposablePhysics.A_dagger or dagger is p.CompressedSensing.A_dagger
        self._dagger_candidate = closed and not self.real_images  # A_dagger of the embedded map is no pinv of ours
        self._bound: tuple[int, int, int] | None = None
        self._shapes: dict[tuple[int, ...], tuple[int, ...]] = {}  # y.shape[1:] -> x.shape[1:]
        self._out: dict[tuple[int, ...], tuple[int, ...]] = {}  # x.shape[1:] -> y.shape[1:]
        self._layouts: dict[tuple[int, ...], str | None] = {}  # x.shape[1:] -> "square" / "rfft" / None
        self.pinv_source: dict[tuple[int, ...], str] = {}
        shape = input_shape if input_shape is not None else self._shape_from_physics()
        if shape is not None:
            self.bind_shape(tuple(shape[-3:]) if input_shape is None else tuple(shape))

    def config(self) -> dict[str, Any]:
        """What the operator wraps (``physics`` is the class name): a wrapped physics cannot be rebuilt by name."""
        return {
            "name": self.name,
            "physics": type(self.physics).__name__,
            "input_shape": self._bound,
            "real_images": self.real_images,
            "noise": self.noise.config(),
        }

    def extra_repr(self) -> str:
        return f"input_shape={self._bound}, real_images={self.real_images}"

    # -- shapes ---------------------------------------------------------------------------------------------------
    def _shape_from_physics(self) -> tuple[int, ...] | None:
        """The ``(C, H, W)`` deepinv's physics were built for (``img_size``, ``imsize``), if they say."""
        for attr in ("img_size", "imsize"):
            size = getattr(self.physics, attr, None)
            if isinstance(size, (tuple, list, torch.Size)) and len(size) == 3 and all(isinstance(s, int) for s in size):
                c, h, w = (int(s) for s in size)
                return (1 if self.real_images and c == 2 else c, h, w)
        return None

    def bind_shape(self, x_shape: tuple[int, ...]) -> DeepinvOperator:
        """Fix the image shape ``(C, H, W)`` (a ``(B, C, H, W)`` shape gives its last three): it is checked by a
        forward probe, and serves ``input_shape`` and ``has_svd`` before any image was seen."""
        shape = tuple(int(s) for s in x_shape)
        if len(shape) == 4:
            shape = shape[1:]
        if len(shape) != 3:
            raise ShapeError(f"{self.name}: expected an image shape (C, H, W), got {tuple(x_shape)}")
        if self._bound is not None and shape != self._bound:
            raise ShapeError(f"{self.name}: the image shape is fixed to {self._bound}, got {shape}")
        self.output_shape((1, *shape))  # raises a ShapeError if the physics refuses it
        self._bound = shape
        return self

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        key = tuple(int(s) for s in x_shape[1:])
        if key not in self._out:
            probe = torch.zeros(
                (self._param_batch(), *key), dtype=self._dtype() or torch.float32, device=self._device()
            )
            try:
                with torch.no_grad():
                    self.forward(probe)
            except (RuntimeError, ValueError, IndexError) as err:
                raise ShapeError(
                    f"{self.name}: the deepinv physics cannot be applied to images of shape {key} ({err})"
                ) from err
        return (int(x_shape[0]), *self._out[key])

    def input_shape(self, y_shape: tuple[int, ...]) -> tuple[int, ...]:
        b, key = int(y_shape[0]), tuple(int(s) for s in y_shape[1:])
        if key not in self._shapes and self._bound is not None:
            expected = self.output_shape((b, *self._bound))
            if expected[1:] != key:
                raise ShapeError(
                    f"{self.name}: expected an observation of shape {expected} for images of shape {self._bound}, got "
                    f"{tuple(y_shape)}"
                )
            self._shapes[key] = self._bound
        if key not in self._shapes:  # the adjoint of a zero observation has the input's shape
            probe = torch.zeros(
                (self._param_batch(), *key), dtype=self._dtype() or torch.float32, device=self._device()
            )
            try:
                with torch.no_grad():
                    self._shapes[key] = tuple(self.adjoint(probe).shape[1:])
            except (RuntimeError, ValueError, IndexError) as err:
                raise ShapeError(
                    f"{self.name}: cannot tell the image shape of observations of shape {tuple(y_shape)} ({err}); "
                    "pass input_shape=(C, H, W) to operator_from_physics"
                ) from err
        return (b, *self._shapes[key])

    def check_input(self, x: Tensor, name: str = "x", clean: bool = False) -> Tensor:
        return check_image(x, name, clean=clean, channels=1 if self.real_images else None)

    # -- running the physics --------------------------------------------------------------------------------------
    def _dtype(self) -> torch.dtype | None:
        return _module_dtype(self.physics)

    def _device(self) -> torch.device | None:
        return _module_device(self.physics)

    def _param_batch(self) -> int:
        """How many items the physics' parameters were given for: deepinv batches masks and filters as the leading
        dimension of 4-D and larger tensors."""
        sizes = [
            int(t.shape[0])
            for t in self.physics.buffers()
            if t.dim() >= 4 and (t.is_floating_point() or t.is_complex())
        ]
        return max(sizes, default=1)

    def _run(self, fn: Callable[[Tensor], Any], t: Tensor, what: str) -> Tensor:
        """``fn(t)`` in the physics' dtype, per block of its parameter batch, returned in ``t``'s dtype."""
        device = self._device()
        if device is not None and t.device != device:
            raise DeviceError(
                f"{self.name}: the deepinv physics is on {device} but {what} is on {t.device}; move the operator "
                f"(op.to(device)) or the data"
            )
        dtype = self._dtype() or t.dtype
        t_in = t.to(dtype)
        pb, b = self._param_batch(), t.shape[0]
        if pb in (1, b):
            out = fn(t_in)
        elif b % pb:
            raise ShapeError(
                f"{self.name}: the physics' parameters were given for a batch of {pb}, which does not divide the "
                f"batch of {b} of {what}"
            )
        else:
            out = torch.cat([fn(c) for c in t_in.split(pb)])
        if not isinstance(out, Tensor) or type(out).__name__ == "TensorList":
            raise TypeError(
                f"{self.name}: the physics returned a {type(out).__name__}, not a tensor (stacked physics "
                "cannot be wrapped)"
            )
        return out.to(t.dtype)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        x_in = torch.cat([x, torch.zeros_like(x)], dim=1) if self.real_images else x
        y = self._run(self.physics.A, x_in, "x")
        key = tuple(x.shape[1:])
        self._out.setdefault(key, tuple(y.shape[1:]))
        self._shapes.setdefault(tuple(y.shape[1:]), key)
        return y

    def adjoint(self, y: Tensor) -> Tensor:
        check_tensor(y, "y")
        x = self._run(self.physics.A_adjoint, y, "y")
        return x[:, :1] if self.real_images else x

    def pinv(self, y: Tensor) -> Tensor:
        """``physics.A_dagger(y)`` where it is a closed form confirmed to be the minimum-norm least-squares solution
        (:attr:`pinv_source`), else conjugate gradients on the normal equations ``A^T A x = A^T y`` from ``x = 0``,
        whose iterates stay in the row space of A: the minimum-norm solution whatever the rank (a real image seen
        through a complex physics has more measurements than unknowns, so ``A A^T`` of the default is singular)."""
        check_tensor(y, "y")
        key = tuple(self.input_shape(tuple(y.shape))[1:])
        if self._dagger_ok(key):
            return self._run(self.physics.A_dagger, y, "y")
        # the normal equations square the condition number: ask float64 for more, and float32 for what it can give
        tol, iters = (1e-11, 1000) if y.dtype == torch.float64 else (1e-5, 500)
        return conjugate_gradient(lambda v: self.adjoint(self.forward(v)), self.adjoint(y), tol=tol, max_iter=iters)

    def _dagger_ok(self, key: tuple[int, ...]) -> bool:
        if key not in self.pinv_source:
            ok = self._dagger_candidate and (self._layout(key) is not None or self._probe_dagger(key))
            self.pinv_source[key] = "deepinv" if ok else "cg"
        return self.pinv_source[key] == "deepinv"

    def _probe_dagger(self, key: tuple[int, ...]) -> bool:
        """Is ``A_dagger`` the pseudo-inverse? On a random y: ``x = A_dagger(y)`` solves the normal equations
        ``A^T (A x - y) = 0`` and lies in the row space of A (``A_dagger(A x) = x``)."""
        dtype = self._dtype() or torch.float64
        tol = 1e-3 if torch.finfo(dtype).bits <= 32 else 1e-7
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            x0 = torch.randn((self._param_batch(), *key), generator=g, dtype=dtype).to(self._device() or "cpu")
            y = torch.randn(self.forward(x0).shape, generator=g, dtype=dtype).to(x0.device)
            x = self._run(self.physics.A_dagger, y, "y")
            if tuple(x.shape) != tuple(x0.shape):
                return False
            normal = self.adjoint(self.forward(x) - y).norm()
            again = self._run(self.physics.A_dagger, self.forward(x), "y")
            aty = self.adjoint(y).norm()
        return bool(normal <= tol * aty) and bool((again - x).norm() <= tol * x.norm())

    @property
    def rcond(self) -> float | None:
        """The relative cut-off of the truncated pseudo-inverse, where ``pinv`` is ``DecomposablePhysics.A_dagger``
        (which drops singular values at or below 1e-5, absolute); None elsewhere."""
        if not (self._decomposable and self._dagger_candidate):
            return None
        mask = getattr(self.physics, "mask", None)
        top = float(mask.abs().max()) if isinstance(mask, Tensor) and mask.numel() else 0.0
        return DAGGER_CUTOFF / top if top > 0 else None

    # -- the SVD --------------------------------------------------------------------------------------------------
    @property
    def has_svd(self) -> bool:  # type: ignore[override]
        """True where the physics is a ``DecomposablePhysics`` with orthonormal ``U``, ``V`` and real singular values
        for the known image shape (bound, or the last one seen); checked by a probe once per shape."""
        key = self._bound or next(iter(self._out), None)
        return key is not None and self._layout(key) is not None

    def _layout(self, key: tuple[int, ...]) -> str | None:
        """How ``V_adjoint`` writes spectral coordinates for images of shape ``key``: ``"square"`` (one real
        coordinate per pixel, as deepinv gives them), ``"rfft"`` (a real half spectrum, packed by :func:`_pack`), or
        None where deepinv's decomposition is no orthonormal SVD (complex singular values, a thin V...)."""
        if key not in self._layouts:
            self._layouts[key] = self._probe_layout(key) if (self._decomposable and not self.real_images) else None
        return self._layouts[key]

    def _probe_layout(self, key: tuple[int, ...]) -> str | None:
        mask = getattr(self.physics, "mask", None)
        if not isinstance(mask, Tensor) or mask.is_complex() or bool((mask < 0).any()):
            return None
        dtype = self._dtype() or torch.float64
        tol = 1e-4 if torch.finfo(dtype).bits <= 32 else 1e-9
        g = torch.Generator().manual_seed(0)
        x = torch.randn((self._param_batch(), *key), generator=g, dtype=dtype).to(self._device() or "cpu")
        try:
            with torch.no_grad():
                z = self._run(self.physics.V_adjoint, x, "x")
                if z.is_complex():
                    return None
                if z.shape == x.shape:
                    layout = "square"
                elif tuple(z.shape) == (*x.shape[:-1], x.shape[-1] // 2 + 1, 2):
                    layout = "rfft"
                else:
                    return None
                self._layouts[key] = layout  # the SVD methods below need it for the checks
                zc = self.svd_vt(x)
                s = self.singulars(zc)
                ax = self.forward(x)
                checks = [
                    (zc.norm() - x.norm()).abs() <= tol * x.norm(),  # V^T is an isometry...
                    (self.svd_v(zc) - x).norm() <= tol * x.norm(),  # ...onto: V V^T = I
                    (self.svd_u(s * zc) - ax).norm() <= tol * x.norm() * float(s.max()),  # A = U S V^T
                    (self.svd_ut(ax) - s * zc).norm() <= tol * x.norm() * float(s.max()),  # U^T U = I on the range
                ]
        except (RuntimeError, ValueError, IndexError, TypeError):
            checks = [False]
        finally:
            self._layouts.pop(key, None)
        return layout if all(bool(c) for c in checks) else None

    def _svd_layout(self, t: Tensor, image: bool) -> str:
        key = tuple(t.shape[1:]) if image else tuple(self.input_shape(tuple(t.shape))[1:])
        layout = self._layout(key)
        if layout is None:
            self._no_svd()
        return layout  # type: ignore[return-value]

    def svd_vt(self, x: Tensor) -> Tensor:
        layout = self._svd_layout(x, image=True)
        z = self._run(self.physics.V_adjoint, x, "x")
        return _pack(z[..., 0], z[..., 1], x.shape[-1]) if layout == "rfft" else z

    def svd_v(self, z: Tensor) -> Tensor:
        layout = self._svd_layout(z, image=True)
        return self._run(self.physics.V, _unpack(z) if layout == "rfft" else z, "z")

    def svd_ut(self, y: Tensor) -> Tensor:
        key = tuple(self.input_shape(tuple(y.shape))[1:])
        layout = self._layout(key)
        if layout is None:
            self._no_svd()
        z = self._run(self.physics.U_adjoint, y, "y")
        if layout == "rfft":
            z = _pack(z[..., 0], z[..., 1], key[-1])
        return z * (self.singulars(z) > 0)

    def svd_u(self, z: Tensor) -> Tensor:
        layout = self._svd_layout(z, image=True)
        z = z * (self.singulars(z) > 0)
        return self._run(self.physics.U, _unpack(z) if layout == "rfft" else z, "z")

    def singulars(self, z: Tensor) -> Tensor:
        layout = self._svd_layout(z, image=True)
        mask = self.physics.mask.to(device=z.device, dtype=z.dtype)
        if layout == "rfft":
            mask = _pack(mask[..., 0], mask[..., 0], z.shape[-1], scale=1.0)
        if mask.dim() == z.dim() and mask.shape[0] not in (1, z.shape[0]):
            if z.shape[0] % mask.shape[0]:
                raise ShapeError(
                    f"{self.name}: the physics' parameters were given for a batch of {mask.shape[0]}, which does not "
                    f"divide the batch of {z.shape[0]}"
                )
            mask = mask.repeat(z.shape[0] // mask.shape[0], *([1] * (mask.dim() - 1)))
        return mask.expand(z.shape)


def operator_from_physics(
    physics: Any,
    input_shape: tuple[int, ...] | None = None,
    *,
    real_images: bool = False,
    noise: NoiseModel | None = None,
) -> DeepinvOperator:
    """Wrap a ``deepinv.physics.LinearPhysics`` as an invgen linear operator.

    Args:
        physics: the deepinv physics (used as it is, never copied).
        input_shape: the image shape ``(C, H, W)``; default: the physics' ``img_size`` where it has one, else learnt
            from the first image or observation (the adjoint of a zero observation gives it). Needed before the first
            solve for ``has_svd`` of a physics that does not know its size.
        real_images: for a complex physics on ``(B, 2, H, W)`` real/imaginary pairs (MRI): take real single-channel
            images ``(B, 1, H, W)`` instead, fed as ``(x, 0)``; such an operator has no SVD and its pinv is computed
            by conjugate gradients.
        noise: an invgen noise model to use instead of the one mapped from ``physics.noise_model``
            (:func:`noise_from_deepinv`).

    Returns:
        A :class:`DeepinvOperator` (``invgen.solve`` takes it like any invgen operator).

    Raises:
        TypeError: for a physics that is not linear (not a ``LinearPhysics``, or with a sensor model), or a noise
            model invgen lacks. ValueError: for a noise model whose parameters cannot be mapped.

    Example:
        >>> import deepinv
        >>> op = operator_from_physics(deepinv.physics.Demosaicing(img_size=(3, 32, 32)))
        >>> op.has_svd, op.output_shape((2, 3, 32, 32))
        (True, (2, 3, 32, 32))
    """
    return DeepinvOperator(physics, input_shape, real_images=real_images, noise=noise)


# -- denoisers --------------------------------------------------------------------------------------------------------
class DeepinvDenoiserPrior(Prior):
    """A deepinv denoiser ``D(x, sigma)`` as an invgen prior: ``denoise`` calls it, ``score`` is Tweedie's
    ``(D(x, sigma) - x) / sigma^2`` (an MMSE denoiser gives the exact score of the sigma-smoothed prior).

    Args:
        denoiser: a ``deepinv.models.Denoiser`` (or any module called as ``denoiser(x, sigma)``), registered as a
            submodule; it runs in its own floating dtype (inputs cast to it, results cast back).
        sigma_range: ``(sigma_min, sigma_max)`` on the [0, 1] scale, the levels the denoiser was trained for.
        name: the prior's name.
        image_shape: ``(C, H, W)`` if the denoiser only takes one size.
    """

    capabilities = frozenset({"denoiser", "score"})

    def __init__(
        self,
        denoiser: torch.nn.Module,
        sigma_range: tuple[float, float] = (0.0, math.inf),
        name: str = "deepinv-denoiser",
        image_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        if not callable(denoiser):
            raise TypeError(
                f"prior_from_denoiser: expected a denoiser called as D(x, sigma), got {type(denoiser).__name__}"
            )
        lo, hi = (float(s) for s in sigma_range)
        if not 0.0 <= lo <= hi or hi <= 0.0 or math.isnan(hi):
            raise RangeError(
                f"prior_from_denoiser: sigma_range must satisfy 0 <= sigma_min <= sigma_max, sigma_max > 0; "
                f"got {tuple(sigma_range)}"
            )
        self.denoiser = denoiser
        self.sigma_min, self.sigma_max = lo, hi
        self.name = name
        self.image_shape = tuple(int(s) for s in image_shape) if image_shape is not None else None  # type: ignore[assignment]

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """``D(x, sigma)`` with sigma passed as a ``(B,)`` tensor (deepinv's per-item convention).
        Shape: ``(B, C, H, W)`` -> the same."""
        check_image(x, "x")
        s = as_sigma(sigma, x).reshape(-1)
        module = self.denoiser if isinstance(self.denoiser, torch.nn.Module) else None
        dtype = (_module_dtype(module) if module is not None else None) or x.dtype
        out = self.denoiser(x.to(dtype), s.to(dtype))
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ShapeError(f"prior {self.name!r}: the denoiser returned {got} for an input of shape {tuple(x.shape)}")
        return out.to(x.dtype)

    def score(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        """Tweedie's score ``(D(x, sigma) - x) / sigma^2``; needs sigma > 0."""
        s = as_sigma(sigma, x)
        if bool((s <= 0).any()):
            raise ValueError(
                f"prior {self.name!r}: the score of a denoiser (Tweedie) needs sigma > 0, got {s.reshape(-1).tolist()}"
            )
        return (self.denoise(x, s) - x) / s**2

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "denoiser": type(self.denoiser).__name__,
            "sigma_range": (self.sigma_min, self.sigma_max),
            "image_shape": self.image_shape,
        }


def prior_from_denoiser(
    denoiser: torch.nn.Module,
    sigma_range: tuple[float, float] = (0.0, math.inf),
    name: str = "deepinv-denoiser",
    image_shape: tuple[int, int, int] | None = None,
) -> DeepinvDenoiserPrior:
    """Make a deepinv denoiser an invgen prior with the ``denoiser`` and ``score`` capabilities.

    deepinv's convention is invgen's: ``denoiser(x, sigma)`` takes images on the [0, 1] scale and ``sigma`` the noise
    standard deviation on that scale (a float or a ``(B,)`` tensor), and returns the denoised image; nothing is
    rescaled. invgen's diffusion solvers call the denoiser along their own schedule (up to sigma ~ 80 on the [0, 1]
    scale): a denoiser trained on a narrow range (DRUNet: up to 50/255) suits plug-and-play solvers better.

    Args:
        denoiser: the deepinv denoiser (a ``deepinv.models.Denoiser`` or any module called as ``D(x, sigma)``).
        sigma_range: ``(sigma_min, sigma_max)``, the noise levels it is valid for (reported as the prior's
            ``sigma_min`` and ``sigma_max``; default: every level).
        name: the prior's name.
        image_shape: ``(C, H, W)`` if the denoiser only takes one size.

    Example:
        >>> import deepinv
        >>> prior = prior_from_denoiser(deepinv.models.DRUNet(pretrained=None), sigma_range=(0.0, 50 / 255))
        >>> sorted(prior.capabilities)
        ['denoiser', 'score']
    """
    return DeepinvDenoiserPrior(denoiser, sigma_range=sigma_range, name=name, image_shape=image_shape)


_DENOISER_CLASS: list[type] = []


def _denoiser_class() -> type:
    """The ``deepinv.models.Denoiser`` subclass that wraps invgen priors (made once, when deepinv is imported)."""
    if not _DENOISER_CLASS:
        dinv = import_deepinv()

        class InvgenDenoiser(dinv.models.Denoiser):
            """An invgen prior's ``denoise(x, sigma)`` as a deepinv denoiser: ``forward(x, sigma)`` with x on the
            [0, 1] scale and sigma a float or ``(B,)`` tensor of standard deviations on that scale."""

            def __init__(self, prior: Any) -> None:
                super().__init__()
                self.prior = prior

            def forward(self, x: Tensor, sigma: float | Tensor, **kwargs: Any) -> Tensor:
                s = self._handle_sigma(sigma, batch_size=x.shape[0], device=x.device, dtype=x.real.dtype)
                return self.prior.denoise(x, s)

        _DENOISER_CLASS.append(InvgenDenoiser)
    return _DENOISER_CLASS[0]


def to_deepinv_denoiser(prior: Any) -> torch.nn.Module:
    """Make an invgen prior with the ``denoiser`` capability a ``deepinv.models.Denoiser``.

    Its ``forward(x, sigma)`` is ``prior.denoise(x, sigma)`` (same scale, no conversion), so the prior can be used in
    deepinv's algorithms: ``deepinv.sampling.DiffPIR(model=to_deepinv_denoiser(prior), ...)``,
    ``deepinv.optim.PnP(to_deepinv_denoiser(prior))``, ``deepinv.optim.ScorePrior(...)``.

    Raises:
        MissingCapabilityError: if the prior has no ``denoiser`` capability.
    """
    caps = capabilities_of(prior)
    if "denoiser" not in caps:
        raise MissingCapabilityError(
            f"to_deepinv_denoiser: prior {getattr(prior, 'name', type(prior).__name__)!r} has no 'denoiser' capability "
            f"(it offers {', '.join(sorted(caps)) or 'none'}); a deepinv denoiser is D(x, sigma)"
        )
    return _denoiser_class()(prior)
