"""umt: Unmasked Teacher (Li et al., ICCV 2023, arXiv 2303.16058) as a command-line toolkit.

Shape glossary used in every docstring: B batch, C image channels, T frames (or temporal token steps), H/W pixel or
token grid, N = T*H*W tokens, Nv visible tokens, D / Dt student / teacher width, K aligned layers, L text length.
"""

__version__ = "0.1.0.dev0"
