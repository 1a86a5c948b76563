"""The core's own plugin: operators, baseline and Langevin solvers, and metrics, registered through the hooks.

The registries are filled only through pluggy hooks; this module is registered on the plugin manager like any
plugin (as ``invgen-core``). Factories import their modules lazily so listing stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from invgen.registry import hookimpl


def _lazy(path: str) -> Callable[..., Any]:
    """A factory that imports ``module:attr`` on first use."""
    module, attr = path.split(":")

    def factory(*args: Any, **kwargs: Any) -> Any:
        return getattr(import_module(module), attr)(*args, **kwargs)

    factory.__qualname__ = factory.__name__ = attr
    return factory


def _solver_factory(name: str, fn_path: str, needs: tuple[str, ...]) -> Callable[..., Any]:
    def factory(**options: Any) -> Any:
        from invgen.solvers.base import Solver

        module, attr = fn_path.split(":")
        return Solver(name, getattr(import_module(module), attr), needs, **options)

    return factory


# name, function, needs, description
SOLVERS: list[tuple[str, str, tuple[str, ...], str]] = [
    ("pinv", "invgen.solvers.pinv:pinv", (), "pseudo-inverse A^+ y (baseline)"),
    ("tikhonov", "invgen.solvers.tikhonov:tikhonov", (), "Tikhonov / Wiener: quadratic MAP towards a constant"),
    ("tv", "invgen.solvers.tv:tv", (), "total-variation MAP by primal-dual (Chambolle-Pock) in [0, 1]"),
    ("lasso", "invgen.solvers.lasso:lasso", (), "Lasso (l1 in the pixel basis) by FISTA: the CSGM paper's baseline"),
    ("ula", "invgen.solvers.langevin:ula", ("score",), "unadjusted Langevin on the posterior (pixel space)"),
    (
        "mala",
        "invgen.solvers.langevin:mala",
        ("score", "log_density"),
        "Metropolis-adjusted Langevin: exact in the limit, adaptive step",
    ),
    ("ddpm", "invgen.solvers.ddpm:ddpm", ("denoiser",), "unconditional DDPM ancestral sampling (ignores y)"),
    ("ddim", "invgen.solvers.ddim:ddim", ("denoiser",), "unconditional DDIM sampling with eta (ignores y)"),
    ("dps", "invgen.solvers.dps:dps", ("denoiser",), "diffusion posterior sampling (Chung et al. 2023)"),
    ("diffpir", "invgen.solvers.diffpir:diffpir", ("denoiser",), "DiffPIR plug-and-play diffusion (Zhu et al. 2023)"),
    ("ddrm", "invgen.solvers.ddrm:ddrm", ("denoiser",), "DDRM spectral diffusion restoration (Kawar et al. 2022)"),
    ("ddnm", "invgen.solvers.ddnm:ddnm", ("denoiser",), "DDNM+ range-null space diffusion (Wang et al. 2023)"),
    ("pigdm", "invgen.solvers.pigdm:pigdm", ("denoiser",), "pseudoinverse-guided diffusion (Song et al. 2023)"),
    (
        "annealed_langevin",
        "invgen.solvers.langevin:annealed_langevin",
        ("denoiser",),
        "annealed Langevin on the posterior (Song & Ermon 2019, Jalal et al. 2021)",
    ),
    ("mmps", "invgen.solvers.mmps:mmps", ("denoiser",), "moment-matching posterior sampling (Rozet et al. 2024)"),
    (
        "daps",
        "invgen.solvers.daps:daps",
        ("denoiser",),
        "decoupled annealing posterior sampling (Zhang et al. 2025)",
    ),
    ("pnp_dm", "invgen.solvers.pnp_dm:pnp_dm", ("denoiser",), "split-Gibbs plug-and-play diffusion (Wu et al. 2024)"),
    ("red_diff", "invgen.solvers.red_diff:red_diff", ("denoiser",), "variational RED-diff (Mardani et al. 2024)"),
    ("repaint", "invgen.solvers.repaint:repaint", ("denoiser",), "RePaint inpainting with resampling (Lugmayr 2022)"),
    ("tds", "invgen.solvers.tds:tds", ("denoiser",), "twisted diffusion sampler, SMC with K particles (Wu 2023)"),
    (
        "mcgdiff",
        "invgen.solvers.mcgdiff:mcgdiff",
        ("denoiser",),
        "Monte Carlo guided diffusion, SMC for linear Gaussian problems (Cardoso 2024)",
    ),
    ("fps", "invgen.solvers.fps:fps", ("denoiser",), "filtering posterior sampling, SMC (Dou & Song 2024)"),
    (
        "latent_map",
        "invgen.solvers.latent:latent_map",
        ("generator",),
        "latent MAP by Adam with random restarts (CSGM, Bora et al. 2017)",
    ),
    (
        "latent_mala",
        "invgen.solvers.latent:latent_mala",
        ("generator",),
        "Metropolis-adjusted Langevin on the latent posterior p(z | y), returns G(z); adaptive step",
    ),
    (
        "latent_hmc",
        "invgen.solvers.latent:latent_hmc",
        ("generator",),
        "Hamiltonian Monte Carlo on the latent posterior p(z | y), returns G(z); adaptive step",
    ),
]

# name, class, linear, examples [(kwargs, input shape)], description
OPERATORS: list[tuple[str, str, bool, list[tuple[dict[str, Any], tuple[int, ...]]], str]] = [
    ("identity", "invgen.operators.identity:Identity", True, [({}, (2, 3, 8, 8))], "denoising: A = I"),
    (
        "inpaint",
        "invgen.operators.inpaint:Inpaint",
        True,
        [
            ({"mask": "box"}, (2, 1, 16, 16)),
            ({"mask": "box", "position": "random", "seed": 3}, (2, 3, 16, 16)),
            ({"mask": "random", "ratio": 0.7, "seed": 1}, (2, 3, 12, 12)),
            ({"mask": "freeform", "seed": 2}, (2, 1, 32, 32)),
            ({"mask": "half"}, (2, 1, 8, 8)),
        ],
        "inpainting: A = mask * x (box, random, freeform, half, user mask)",
    ),
    (
        "superres",
        "invgen.operators.superres:SuperResolution",
        True,
        [
            ({"scale": 2}, (2, 1, 16, 16)),
            ({"scale": 4, "kernel": "block"}, (2, 3, 16, 16)),
            ({"scale": 2, "kernel": "bicubic"}, (2, 1, 16, 12)),
            ({"scale": 4, "kernel": "bicubic"}, (1, 3, 32, 32)),
            ({"scale": 8, "kernel": "block"}, (1, 1, 32, 32)),
        ],
        "super-resolution: block-average (exact SVD) or antialiased bicubic downsampling",
    ),
    (
        "blur",
        "invgen.operators.blur:Blur",
        True,
        [
            ({"kernel": "gaussian", "sigma": 1.0}, (2, 1, 16, 16)),
            ({"kernel": "motion", "size": 7, "seed": 0}, (1, 3, 16, 16)),
        ],
        "circular deblurring: Gaussian, seeded motion, any kernel or kernel file",
    ),
    (
        "colorize",
        "invgen.operators.color:Colorize",
        True,
        [({}, (2, 3, 8, 8))],
        "colorization: A = ITU-R 601 luma of RGB",
    ),
    (
        "sensing",
        "invgen.operators.sensing:Sensing",
        True,
        [
            ({"m": 20, "seed": 0}, (2, 1, 6, 6)),
            ({"m": 40, "seed": 1, "shape": (3, 4, 4)}, (2, 3, 4, 4)),
        ],
        "compressed sensing: y = G x / sqrt(m) with a seeded Gaussian G (m x d)",
    ),
    (
        "sketch",
        "invgen.operators.sketch:Sketch",
        False,
        [({}, (2, 1, 16, 16))],
        "sketch-to-image: differentiable soft edge map (Sobel magnitude, normalised, soft threshold)",
    ),
    (
        "joint",
        "invgen.operators.joint:joint",
        True,  # linear when its parts are (these examples); with a nonlinear part it is not (see "exemplar")
        [
            ({"operators": [{"name": "inpaint", "mask": "box"}, {"name": "superres", "scale": 2}]}, (2, 1, 8, 8)),
            ({"operators": [{"name": "colorize"}, {"name": "identity"}]}, (2, 3, 4, 4)),
        ],
        "joint observation of several operators (linear when every part is), each with its own noise: y = (y_1, "
        "..., y_K) flattened, "
        "log p(y | x) = sum_k log p_k(y_k | x)",
    ),
]


def _exemplar_examples() -> list[tuple[dict[str, Any], tuple[int, ...]]]:
    """Examples of the ``exemplar`` operator: they hold an exemplar image tensor, so they are made when registering."""
    import torch

    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(3, 12, 20, generator=g)
    gray = torch.rand(1, 9, 9, generator=g)
    return [
        ({"mask": "box", "size": (16, 16), "box_size": 6, "exemplar": rgb}, (2, 3, 16, 16)),
        ({"mask": "half", "size": (16, 16), "exemplar": rgb, "tau_scale": 2.0}, (1, 1, 16, 16)),
        ({"mask": "box", "size": (12, 12), "box_size": 4, "position": "random", "exemplar": gray}, (2, 3, 12, 12)),
    ]


METRICS: list[tuple[str, str, bool, str]] = [
    ("psnr", "invgen.metrics.psnr:psnr", True, "peak signal-to-noise ratio in dB (data range 1)"),
    ("ssim", "invgen.metrics.ssim:ssim", True, "structural similarity (scikit-image defaults)"),
    ("lpips", "invgen.metrics.lpips:lpips", False, "LPIPS AlexNet v0.1 distance"),
    (
        "edge_f1",
        "invgen.metrics.edges:sketch_f1",
        True,
        "symmetric F1 (1-pixel tolerance) between the Canny edges of x and the Canny sketch of the reference",
    ),
    (
        "edge_chamfer",
        "invgen.metrics.edges:sketch_chamfer",
        False,
        "symmetric chamfer distance in pixels between the Canny edges of x and the Canny sketch of the reference",
    ),
]


@hookimpl
def register_operators(register: Callable[..., None]) -> None:
    for name, path, linear, examples, description in OPERATORS:
        register(name, _lazy(path), linear=linear, examples=examples, description=description)
    register(
        "exemplar",
        _lazy("invgen.operators.exemplar:exemplar_inpainting"),
        linear=False,
        examples=_exemplar_examples(),
        description="exemplar-guided inpainting (Paint by Example as a posterior): the seen pixels and "
        "-||phi(box of x) - phi(exemplar)||^2 / (2 tau^2), phi pooled LPIPS-AlexNet features",
    )


# what a solver asks of the operator beyond "any": "linear", or "svd" (linear with a cheap SVD)
SOLVER_OPERATORS: dict[str, str] = {
    "pinv": "linear",
    "tikhonov": "linear",
    "tv": "linear",
    "lasso": "linear",
    "ddrm": "svd",
    "ddnm": "svd",
    "pigdm": "svd",
    "mmps": "linear",
    "repaint": "inpaint",
    "mcgdiff": "svd",
    "fps": "linear",
}


@hookimpl
def register_solvers(register: Callable[..., None]) -> None:
    for name, path, needs, description in SOLVERS:
        register(
            name,
            _solver_factory(name, path, needs),
            needs=needs,
            operators=SOLVER_OPERATORS.get(name, "any"),
            description=description,
        )


@hookimpl
def register_metrics(register: Callable[..., None]) -> None:
    for name, path, higher, description in METRICS:
        register(name, _lazy(path), higher_is_better=higher, description=description)


# name, factory, description, shape (C, H, W) or None when sizes vary, files (globs relative to the data root).
# invgen/data/sets.py SPECS holds the same rows (tests/test_datasets.py checks they agree); each factory takes
# root=None (INVGEN_DATA) and verify=True, the three ML sets also split="test".
DATASETS: list[tuple[str, str, str, tuple[int, int, int] | None, tuple[str, ...]]] = [
    (
        "mnist",
        "invgen.data.sets:mnist",
        "MNIST digits (test 10000 / train 60000), 28x28 padded by 2 to 1x32x32; ids are split indices '00000'...",
        (1, 32, 32),
        ("mnist/*-idx?-ubyte.gz",),
    ),
    (
        "fashion-mnist",
        "invgen.data.sets:fashion_mnist",
        "Fashion-MNIST (test 10000 / train 60000), 28x28 padded by 2 to 1x32x32; ids are split indices '00000'...",
        (1, 32, 32),
        ("fashion-mnist/*-idx?-ubyte.gz",),
    ),
    (
        "cifar10",
        "invgen.data.sets:cifar10",
        "CIFAR-10 (test 10000 / train 50000) from the JPEG archive (quality ~75, lossy), 3x32x32, ordered by "
        "(class, file); ids are split indices '00000'...",
        (3, 32, 32),
        ("cifar10/cifar10_jpg.tar.gz",),
    ),
    (
        "set5",
        "invgen.data.sets:set5",
        "Set5 super-resolution test set: the 5 HR ground-truth images of eval/Set5/HR (LR_bicubic/ is not read), "
        "RGB, 228x344 to 512x512",
        None,
        ("eval/Set5/HR/*.png",),
    ),
    (
        "set14",
        "invgen.data.sets:set14",
        "Set14 (the colour CSet14 files): 14 test images, RGB (the gray 'bridge' repeated to 3 channels), "
        "250x361 to 720x576",
        None,
        ("eval/Set14/*.png",),
    ),
    (
        "set12",
        "invgen.data.sets:set12",
        "Set12 denoising test set (DnCNN): 12 gray images, 7 at 256x256 and 5 at 512x512",
        None,
        ("eval/Set12/*.png",),
    ),
    (
        "bsd68",
        "invgen.data.sets:bsd68",
        "BSD68 denoising test set (DnCNN): 68 gray clean images, 321x481 or 481x321",
        None,
        ("eval/BSD68/*.png",),
    ),
    (
        "cbsd68",
        "invgen.data.sets:cbsd68",
        "CBSD68 (FFDNet): the 68 BSD68 clean images in colour, RGB 321x481 or 481x321",
        None,
        ("eval/CBSD68/*.png",),
    ),
    (
        "kodak24",
        "invgen.data.sets:kodak24",
        "Kodak24 (FFDNet test set): the 24 Kodak photos as 500x500 RGB crops",
        (3, 500, 500),
        ("eval/Kodak24/*.png",),
    ),
    (
        "ffhq256-100",
        "invgen.data.sets:ffhq256_100",
        "100 FFHQ face photos 256x256 RGB (the DAPS demo subset; FFHQ licence BY-NC-SA)",
        (3, 256, 256),
        ("eval/FFHQ256_100/*.png",),
    ),
    (
        "folder",
        "invgen.data.sets:folder",
        "any folder of PNG/JPEG images: folder(path, recursive=False, verify=False); sorted by file name, ids are the "
        "file stems",
        None,
        (),
    ),
]


# channel count of the sets whose sizes vary (shape None); the others' is their shape[0]
DATASET_CHANNELS = {"set5": 3, "set14": 3, "set12": 1, "bsd68": 1, "cbsd68": 3}


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    for name, path, description, shape, files in DATASETS:
        channels = shape[0] if shape else DATASET_CHANNELS.get(name)
        register(name, _lazy(path), description=description, shape=shape, channels=channels, files=files)
