"""Token masking. Every masker returns `visible` (B, N) bool with True = kept (fed to the student).

The official code passes `bool_masked_pos` (True = masked) instead; convert with `visible = ~masked` at the boundary.
`gather.gather_visible` is the one place tokens are selected with such a mask; `functional` holds the pure, seeded
maskers; `build` puts them behind the one signature the registry `umt_cli.variants.MASKERS` names.
"""
