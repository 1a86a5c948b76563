"""What plugin and solver authors use to check their work: the exact-posterior oracle (:mod:`invgen.testing.oracle`).

Imported on use only (``import invgen.testing.oracle``); it needs the built-in analytic plugin (``invgen_plugins``).
"""
