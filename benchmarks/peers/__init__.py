"""The side-by-side frontier (issue 29): invgen, deepinv and azula on the same networks.

``common``: tasks, observations, metrics, call counting; ``invgen_side``, ``deepinv_peer``, ``azula_peer``: one file
per library (its denoiser convention, its operators, its samplers and their defaults); ``report``: tables and plots.
The driver is ``benchmarks/frontier_peers.py``. Nothing here is imported by the library.
"""
