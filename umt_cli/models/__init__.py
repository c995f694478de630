"""Models: the video ViT student and its alignment heads, the teacher interface and its CLIP implementation, and
checkpoint conversion.

Importing this package imports nothing (the CLI and the recipe checks read `umt_cli.models.presets` without torch);
import the submodules directly: `umt_cli.models.student`, `.heads`, `.teacher`, `.clip`, `.layers`, `.convert`.

Shapes in docstrings and trailing comments use the letters of docs/glossary.md (B, T, HW, N, Nv, D, Dt, Ct, K, ...).
Masks are `visible` (B, N) bool, True = kept and fed to the student (the official code's `mask` means the opposite).
"""
