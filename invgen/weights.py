"""Weight folders of prior plugins: how the built-in families ship, register and load their weights (public API).

A *weight folder* holds ``config.json`` (everything needed to rebuild the network, and optionally ``image_shape``,
``training.dataset``, ``datasets`` and ``variants``) and ``model.safetensors`` (the state dict; safetensors, never
pickle). The built-in families (``vae``, ``gan``, ``flow``, ``ebm``, ``diffusion``) use exactly these helpers, and a
third-party plugin can too:

* :func:`register_weight_folders` registers every folder of a plugin's ``weights/`` as a prior named after the
  folder, without loading anything (only the small ``config.json`` files are read, for ``image_shape`` and the
  datasets);
* :func:`load_pretrained` returns ``(config, state_dict)`` of a folder, for a prior's ``from_pretrained``;
* :func:`variant_config` resolves a config's ``variants`` (the same weights under another name with some keys
  replaced, e.g. an any-size use of a network trained on 32x32 images);
* :func:`export_weights` writes a module's state dict as ``model.safetensors``, atomically;
* :func:`write_config` writes ``config.json`` after it, recording the SHA-256 of the tensors file under ``"sha256"``;
* :func:`load_state` loads a state dict into a network after checking its keys and shapes, and :func:`config_errors`
  wraps building the network from the config.

Loading checks the tensors file against the recorded SHA-256, for truncation, foreign formats (pickles are never
loaded: ``python -m invgen.convert FILE FOLDER`` converts a torch checkpoint) and NaN/Inf; every failure is a
:class:`~invgen.errors.WeightsError` naming the file (:mod:`invgen.train.verify`).

They live in :mod:`invgen.train.checkpoint` and :mod:`invgen.train.verify` (importing them from there keeps
working); this module is their documented home for plugin authors. See ``docs/plugins.md`` for a complete generator
plugin.

Example:
    >>> from invgen.weights import load_pretrained
    >>> config, state = load_pretrained("path/to/my-prior")  # doctest: +SKIP
    >>> net = MyNet(**config["net"]); net.load_state_dict(state)  # doctest: +SKIP
"""

from __future__ import annotations

from invgen.train.checkpoint import export_weights, load_pretrained, register_weight_folders, variant_config
from invgen.train.verify import config_errors, load_state, write_config

__all__ = [
    "config_errors",
    "export_weights",
    "load_pretrained",
    "load_state",
    "register_weight_folders",
    "variant_config",
    "write_config",
]
