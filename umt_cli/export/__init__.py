"""What `umt export` writes: self-describing bundles, ONNX files and `torch.export` programs.

- `bundle.py`: a folder (`model.safetensors`, `config.json`, `README.md`, `tokenizer/`) that `umt` loads back with
  no other file: `write_bundle`, `read_bundle`, `load_bundle`, `is_bundle`.
- `card.py`: the bundle's model card (`README.md`).
- `onnx.py`: `export_onnx` (ONNX, checked under onnxruntime) and `export_pt2` (`torch.export`, checked against eager).

There is no TorchScript export: `torch.jit.script` / `save` are deprecated in recent torch (docs/official-behaviour.md,
Export).
"""
