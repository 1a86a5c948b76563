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
* :func:`export_weights` writes a module's state dict as ``model.safetensors``, atomically.

They live in :mod:`invgen.train.checkpoint` (importing them from there keeps working); this module is their
documented home for plugin authors. See ``docs/plugins.md`` for a complete generator plugin.

Example:
    >>> from invgen.weights import load_pretrained
    >>> config, state = load_pretrained("path/to/my-prior")  # doctest: +SKIP
    >>> net = MyNet(**config["net"]); net.load_state_dict(state)  # doctest: +SKIP
"""

from __future__ import annotations

from invgen.train.checkpoint import export_weights, load_pretrained, register_weight_folders, variant_config

__all__ = ["export_weights", "load_pretrained", "register_weight_folders", "variant_config"]
