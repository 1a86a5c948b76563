"""Optional adapters to other libraries; each is its own module, imported only on use.

* :mod:`invgen.interop.deepinv`: deepinv physics as invgen operators, deepinv denoisers as invgen priors, and invgen
  priors as deepinv denoisers (needs ``pip install "invgen[deepinv]"``).

Nothing here is imported by ``import invgen``, and importing this package imports no other library.
"""
