"""umt: Unmasked Teacher (Li et al., ICCV 2023, arXiv 2303.16058) as a command-line toolkit.

Shapes in docstrings and comments use the letters of docs/glossary.md; docs/architecture.md shows the package layout.
"""

__version__ = "0.1.0.dev0"
