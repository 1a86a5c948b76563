"""The built-in prior families of invgen, each a plugin found through the ``invgen`` entry-point group."""
