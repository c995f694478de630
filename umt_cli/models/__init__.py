"""Models: the video ViT student and its alignment heads, the frozen CLIP teacher, and checkpoint conversion.

Importing this package imports nothing (the CLI and the recipe checks read `umt_cli.models.presets` without torch);
import the submodules directly: `umt_cli.models.student`, `.heads`, `.teacher`, `.layers`, `.convert`.

Shape glossary, used by every docstring and trailing shape comment in this package:

| letter | meaning |
|---|---|
| B | batch (per device) |
| C | image channels (3) |
| T | temporal token steps = frames / tubelet |
| H, W | token grid per frame (pixels / patch size) |
| HW | tokens per frame, `H·W` |
| N | student tokens per clip, `T·HW`, in (t, h, w) row-major order: `pos = t·HW + h·W + w` |
| Nv | visible (kept) tokens per clip; every sample of a batch keeps the same number |
| D / Dt | student width / teacher (CLIP transformer) width; the teacher's is also written `Wt` |
| Ct | teacher output dim (CLIP image projection), the space the student is aligned to |
| K | aligned layers (student taps, alignment heads and teacher taps, paired in ascending block order) |
| L | tokens of one teacher frame sequence, `HW + 1` (CLS first) |

Masks are `visible` (B, N) bool, True = kept and fed to the student (the official code's `mask` means the opposite).
"""
