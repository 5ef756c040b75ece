"""The mat study: per-module NTK, Modular Adaptive Training and honest FLOP accounting.

Light on purpose: config validation imports ``traindyn.mat.study``; the torch parts
(``registry``, ``measure``, ``flops``, ``callback``) are imported where used.
"""

__all__: list[str] = []
