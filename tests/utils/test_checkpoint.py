"""Run-directory checkpoints: round trip, weights_only loading, atomicity, pruning, resume resolution, exports."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from umt_cli.errors import CheckpointError, UsageError
from umt_cli.utils import checkpoint as ckpt
from umt_cli.utils.optim import build_adamw


def tied_model_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    embed = nn.Embedding(10, 4)
    head = nn.Linear(4, 10)
    head.weight = embed.weight  # tied, as the MLM decoder and word embeddings are
    qkv = torch.randn(12, 4)
    return {
        "embed.weight": embed.weight,
        "head.weight": head.weight,
        "head.bias": head.bias,
        "q": qkv[:4],  # views sharing one storage
        "k": qkv[4:8],
        "transposed": torch.randn(3, 5).t(),  # non-contiguous
        "half": torch.randn(4, dtype=torch.bfloat16),
    }


def training_state() -> dict:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    optimizer = build_adamw(model, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95), eps=1e-8)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    generator = torch.Generator()
    generator.manual_seed(3)
    return {
        "optimizer": optimizer.state_dict(),
        "scaler": {"scale": 65536.0, "growth_tracker": 0},
        "step": 7,
        "sampler": {"epoch": 1, "offset": 12, "order": [3, 1, 2]},
        "generators": {"mask": generator.get_state()},
        "rng": ckpt.capture_rng(),
        "nested": {"a": {"b": [1, 2.5, "x", None, (1, 2)]}},
    }


def save(checkpoints_dir: Path, step: int, **kwargs) -> Path:
    kwargs.setdefault("keep_last", 3)
    return ckpt.finalize_checkpoint(
        checkpoints_dir,
        step,
        model_state={"w": torch.full((2,), float(step))},
        state={"step": step},
        meta={"schema_version": 1},
        **kwargs,
    )


def test_round_trip(tmp_path):
    model_state, state = tied_model_state(), training_state()
    path = ckpt.finalize_checkpoint(
        tmp_path / "checkpoints",
        1000,
        model_state=model_state,
        state=state,
        meta={"schema_version": 1, "recipe": {"optim": {"lr": 1e-3}}},
        keep_last=3,
    )
    assert path == tmp_path / "checkpoints" / "step_001000"
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "model.safetensors", "state.pt"]
    loaded_model, loaded_state, meta = ckpt.load_checkpoint(path)
    assert loaded_model.keys() == model_state.keys()
    for name, tensor in model_state.items():
        assert loaded_model[name].dtype == tensor.dtype
        assert torch.equal(loaded_model[name], tensor.detach())
    assert meta == {"schema_version": 1, "recipe": {"optim": {"lr": 1e-3}}, "step": 1000}
    assert loaded_state["sampler"] == state["sampler"] and loaded_state["nested"] == state["nested"]
    assert torch.equal(loaded_state["generators"]["mask"], state["generators"]["mask"])
    assert torch.equal(loaded_state["rng"]["torch"], state["rng"]["torch"])
    assert loaded_state["optimizer"]["param_groups"][0]["names"] == ["0.weight"]
    torch.load(path / "state.pt", weights_only=True)  # the property the format exists for


def test_non_plain_state_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"state\['args'\]: Namespace"):
        ckpt.finalize_checkpoint(
            tmp_path, 1, model_state={}, state={"args": argparse.Namespace(lr=1)}, meta={}, keep_last=1
        )
    assert not (tmp_path / "step_000001").exists()


def test_latest_names_the_newest_and_pruning_keeps_the_last_n(tmp_path):
    for step in range(1, 6):
        save(tmp_path, step, keep_last=2)
    assert (tmp_path / "latest").read_text().strip() == "step_000005"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000004", "step_000005"]
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "step_000005"


def test_keep_every_keeps_milestones(tmp_path):
    for step in range(1, 8):
        save(tmp_path, step, keep_last=1, keep_every=3)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_000003", "step_000006", "step_000007"]


def test_leftovers_of_an_interrupted_save_are_ignored_then_removed(tmp_path):
    save(tmp_path, 1)
    partial = tmp_path / ".tmp-step_000002"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    incomplete = tmp_path / "step_000003"  # not written by us, but must never be chosen
    incomplete.mkdir()
    (tmp_path / "latest").unlink()
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "step_000001"
    (tmp_path / "latest").write_text("step_000009\n")  # points at nothing
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "step_000001"
    save(tmp_path, 4)
    assert not partial.exists()
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "step_000004"


def test_saving_the_same_step_again_replaces_it(tmp_path):
    save(tmp_path, 5)
    ckpt.finalize_checkpoint(tmp_path, 5, model_state={"w": torch.ones(3)}, state={}, meta={}, keep_last=3)
    model_state, _, _ = ckpt.load_checkpoint(tmp_path / "step_000005")
    assert torch.equal(model_state["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000005"]


def test_multi_process_flow_with_rank_files(tmp_path):
    tmp = ckpt.tmp_checkpoint_dir(tmp_path, 10)
    for rank in range(2):  # each rank writes its own file before the barrier
        ckpt.write_rank_file(tmp, f"rank{rank}.pt", {"torch": torch.full((4,), rank, dtype=torch.uint8)})
    path = ckpt.finalize_checkpoint(tmp_path, 10, model_state={"w": torch.zeros(1)}, state={}, meta={}, keep_last=1)
    assert (path / "rank1.pt").is_file() and not tmp.exists()
    assert torch.equal(ckpt.load_rank_file(path, "rank1.pt")["torch"], torch.ones(4, dtype=torch.uint8))
    assert ckpt.load_rank_file(path, "rank2.pt") is None
    with pytest.raises(ValueError):
        ckpt.write_rank_file(tmp, "state.pt", {})


def test_resolve_resume_forms(tmp_path):
    run_dir = tmp_path / "run"
    assert ckpt.resolve_resume(run_dir, None) is None
    assert ckpt.resolve_resume(run_dir, "auto") is None  # fresh run: nothing there yet
    run_dir.mkdir()
    assert ckpt.resolve_resume(run_dir, "auto") is None
    save(run_dir / "checkpoints", 1)
    newest = save(run_dir / "checkpoints", 2)
    assert ckpt.resolve_resume(run_dir, "auto") == newest
    assert ckpt.resolve_resume(tmp_path, str(run_dir)) == newest
    assert ckpt.resolve_resume(tmp_path, str(run_dir / "checkpoints")) == newest
    assert ckpt.resolve_resume(tmp_path, str(run_dir / "checkpoints" / "latest")) == newest
    older = run_dir / "checkpoints" / "step_000001"
    assert ckpt.resolve_resume(tmp_path, str(older)) == older


def test_resolve_resume_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (tmp_path / "missing", empty, tmp_path / "latest"):
        if target.name == "latest":
            target.write_text("step_000001\n")
        with pytest.raises(UsageError, match="no complete checkpoint"):
            ckpt.resolve_resume(tmp_path, str(target))


def test_load_checkpoint_needs_a_complete_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not a complete"):
        ckpt.load_checkpoint(tmp_path)


def test_save_weights_writes_a_readable_header(tmp_path):
    path = tmp_path / "export" / "model.safetensors"
    state = tied_model_state()
    metadata = {"arch": "umt-tiny", "config": json.dumps({"num_frames": 4})}
    ckpt.save_weights(path, state, metadata)
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata() == metadata
        assert torch.equal(handle.get_tensor("head.weight"), state["head.weight"].detach())
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]
    with pytest.raises(ValueError, match="str to str"):
        ckpt.save_weights(path, state, {"frames": 4})


def test_capture_and_restore_rng():
    state = ckpt.capture_rng()
    first = torch.rand(5)
    ckpt.restore_rng(state)
    assert torch.equal(torch.rand(5), first)


# --- damaged checkpoints, failed saves, reproducible files --------------------------------------------------------


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("damaged", ["model.safetensors", "state.pt", "meta.json"])
def test_auto_resume_skips_a_truncated_newest_checkpoint(tmp_path, damaged):
    for step in (1, 2, 3):
        save(tmp_path / "checkpoints", step)
    truncate(tmp_path / "checkpoints" / "step_000003" / damaged)
    warnings: list[str] = []
    point = ckpt.open_resume_point(tmp_path, "auto", rank_file="rank0.pt", warn=warnings.append)
    assert point.path == tmp_path / "checkpoints" / "step_000002"
    assert torch.equal(point.model_state["w"], torch.full((2,), 2.0)) and point.state["step"] == 2
    assert len(warnings) == 1 and f"step_000003/{damaged}" in warnings[0]
    with pytest.raises(CheckpointError, match=f"step_000003/{damaged}"):  # asked for by name: no fallback
        ckpt.open_resume_point(tmp_path, str(tmp_path / "checkpoints" / "step_000003"), rank_file="r", warn=print)


def test_auto_resume_with_no_readable_checkpoint_is_an_error(tmp_path):
    save(tmp_path / "checkpoints", 1)
    truncate(tmp_path / "checkpoints" / "step_000001" / "model.safetensors", keep=0.1)
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        ckpt.open_resume_point(tmp_path, "auto", rank_file="rank0.pt", warn=lambda _: None)
    assert ckpt.open_resume_point(tmp_path / "fresh", "auto", rank_file="rank0.pt", warn=print) is None


def test_auto_resume_ignores_steps_beyond_latest(tmp_path):
    """A run resumed from step 1 and stopped again leaves an older step 3 behind; `latest` (step 2) wins."""
    for step in (1, 3, 2):
        save(tmp_path / "checkpoints", step, keep_last=5)
    point = ckpt.open_resume_point(tmp_path, "auto", rank_file="rank0.pt", warn=print)
    assert point.path.name == "step_000002"


def full_disk_open(real_open):
    """`open` whose writes land on /dev/full: the kernel's own ENOSPC, raised where a real full disk raises it."""

    def fake(path, mode="r", *args, **kwargs):
        return real_open("/dev/full" if "w" in mode else path, mode, *args, **kwargs)

    return fake


def test_a_save_on_a_full_disk_fails_naming_the_file_and_leaves_nothing_behind(tmp_path, monkeypatch):
    import builtins
    import errno

    kept = save(tmp_path, 1)
    monkeypatch.setattr(ckpt, "open", full_disk_open(builtins.open), raising=False)
    with pytest.raises(OSError) as failure:
        save(tmp_path, 2)
    assert failure.value.errno == errno.ENOSPC
    assert "step_000002" in str(failure.value.filename)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000001"]  # no .tmp-step_000002
    assert ckpt.latest_checkpoint(tmp_path) == kept


def test_remove_partial_saves(tmp_path):
    save(tmp_path, 1)
    (tmp_path / ".tmp-step_000005").mkdir()
    (tmp_path / ".tmp-step_000005" / "rank0.pt").write_bytes(b"x")
    (tmp_path / ".tmp-123-latest").write_text("step_000005\n")
    ckpt.remove_partial_saves(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000001"]
    ckpt.remove_partial_saves(tmp_path / "missing")  # nothing to do


def test_weight_files_are_byte_identical_canonical_and_world_readable(tmp_path):
    import os
    import struct

    state = tied_model_state()
    ckpt.save_weights(tmp_path / "a.safetensors", state, {"b": "1", "a": "2", "c": "3"})
    ckpt.save_weights(tmp_path / "b.safetensors", dict(reversed(state.items())), {"c": "3", "a": "2", "b": "1"})
    a, b = (tmp_path / "a.safetensors").read_bytes(), (tmp_path / "b.safetensors").read_bytes()
    assert a == b
    (size,) = struct.unpack("<Q", a[:8])
    assert size % 8 == 0
    header = json.loads(a[8 : 8 + size])
    assert list(header) == ["__metadata__", *sorted((k for k in header if k != "__metadata__"),
                                                    key=lambda k: header[k]["data_offsets"])]  # fmt: skip
    assert list(header["__metadata__"]) == ["a", "b", "c"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    with safe_open(str(tmp_path / "a.safetensors"), "pt") as handle:
        assert torch.equal(handle.get_tensor("half"), state["half"])


def test_a_save_interrupted_by_ctrl_c_leaves_nothing_behind(tmp_path, monkeypatch):
    kept = save(tmp_path, 1)

    def interrupted(obj, path):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "_save_durably", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000001"]
    assert ckpt.latest_checkpoint(tmp_path) == kept
