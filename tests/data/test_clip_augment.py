"""The fine-tuning augmentations: timm's RandAugment, random erasing and Mixup/CutMix, each drawn from an explicit
seed, RandAugment once per clip (never per frame), the Mixup targets equal to timm's and summing to 1."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import Mixup
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing

from umt_cli.data.clip_augment import RAND_AUGMENT, ClipErasing, ClipMixup, ClipRandAugment, generator_seed


def clip(frames: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (frames, 40, 48, 3), dtype=np.uint8)


def test_rand_augment_draws_one_transform_per_clip():
    augment = ClipRandAugment(32)
    same = np.repeat(clip(1), 6, axis=0)  # six identical frames
    changed = 0
    for seed in range(8):
        out = augment(same, torch.Generator().manual_seed(seed))
        assert out.shape == same.shape and out.dtype == np.uint8
        assert all(np.array_equal(out[0], frame) for frame in out[1:]), seed  # one draw for every frame
        changed += not np.array_equal(out[0], same[0])
    assert changed >= 6  # four operations at magnitude ~7 almost always change the frame


def test_the_recipe_checks_a_policy_with_timm_and_defaults_to_the_official_one():
    """The recipe's default is this module's official policy (the recipe skips timm's check for it alone, so that
    reading a recipe imports no torch); any other policy is built by timm once, at validation."""
    from pydantic import ValidationError

    from umt_cli.recipe.sections import FinetuneAugment

    assert FinetuneAugment().randaugment == RAND_AUGMENT
    assert FinetuneAugment(randaugment="rand-m9-n2").randaugment == "rand-m9-n2"
    with pytest.raises(ValidationError, match="not a timm RandAugment policy"):
        FinetuneAugment(randaugment="rand-q9")


def test_rand_augment_is_timms_transform_under_the_seed():
    frames = clip(3)
    out = ClipRandAugment(32)(frames, torch.Generator().manual_seed(3))
    seed = generator_seed(torch.Generator().manual_seed(3))
    hparams = {"translate_const": 14, "interpolation": Image.Resampling.BICUBIC}  # 45 % of 32 px
    timm_transform = rand_augment_transform("rand-m7-n4-mstd0.5-inc1", hparams)
    for frame, got in zip(frames, out):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        assert np.array_equal(np.asarray(timm_transform(Image.fromarray(frame))), got)


def test_rand_augment_and_erasing_leave_the_global_generators_alone():
    video = torch.randn(3, 2, 16, 16)
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    ClipRandAugment(32)(clip(2), torch.Generator().manual_seed(0))
    ClipErasing(1.0)(video, torch.Generator().manual_seed(0))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_erasing_is_timms_on_the_frames_as_a_batch():
    video = torch.randn(3, 4, 16, 16)  # (C, T, H, W)
    out = ClipErasing(1.0)(video.clone(), torch.Generator().manual_seed(1))
    seed = generator_seed(torch.Generator().manual_seed(1))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # the erased pixels are normal draws of torch's generator
    expected = RandomErasing(1.0, mode="pixel", max_count=1, num_splits=1, device="cpu")(video.clone().transpose(0, 1))
    assert torch.equal(out, expected.transpose(0, 1))
    assert not torch.equal(out, video)


def test_mixup_targets_match_timm_and_sum_to_one():
    generator = torch.Generator().manual_seed(0)
    video = torch.randn(4, 3, 2, 8, 8, generator=generator)  # (B, C, T, H, W)
    labels = torch.tensor([0, 2, 1, 4])
    for seed in range(6):  # both Mixup and CutMix come up
        mixed, targets = ClipMixup(5)(video.clone(), labels, seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        timm_mix = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode="batch",
                         label_smoothing=0.1, num_classes=5)  # fmt: skip
        expected_images, expected_targets = timm_mix(video.clone().reshape(4, 6, 8, 8), labels)
        assert torch.equal(targets, expected_targets)
        assert torch.equal(mixed, expected_images.view(4, 3, 2, 8, 8))
        torch.testing.assert_close(targets.sum(1), torch.ones(4))
        replaced = mixed != video  # CutMix: the same box in every frame and channel
        assert torch.equal(replaced.any(1).any(1), replaced[:, 0, 0]) or replaced.all()


def test_a_clips_augmentation_depends_only_on_seed_epoch_and_index(make_clip, tmp_path):
    """The same views whichever process computes them, with 0 or 2 workers: each is made from its sample's own
    generator (seed, epoch, index), never from a worker's or process's global state."""
    from torch.utils.data import DataLoader

    from umt_cli.data.clip_augment import FinetuneTransform
    from umt_cli.data.datasets import ClipLoader, VideoListDataset
    from umt_cli.data.sampling import FrameSampler

    for k in range(4):
        make_clip(f"c{k}.mp4", frames=20, width=48, height=40)
    (tmp_path / "train.csv").write_text("".join(f"c{k}.mp4,{k % 2}\n" for k in range(4)))
    dataset = VideoListDataset(tmp_path / "train.csv", tmp_path, seed=3,
                               loader=ClipLoader(FrameSampler("sparse", 4, train=True)),
                               transform=FinetuneTransform(32, repeats=2, erasing=1.0))  # fmt: skip
    keys = [(1, i) for i in range(4)]  # epoch 1
    alone = [dataset[key].video for key in keys]  # this process, in order
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=None, sampler=list(reversed(keys)), num_workers=workers)
        for sample in loader:
            assert torch.equal(sample.video, alone[sample.index]), (workers, sample.index)
    assert alone[0].shape == (2, 3, 4, 32, 32)
    assert not torch.equal(alone[0][0], alone[0][1])  # two independent views of one clip
    assert not torch.equal(dataset[(2, 0)].video, alone[0])  # another epoch, other views


def _views_on_rank(rank: int, world: int, recipe_args: list[str], store: str, out: str) -> None:
    """One of `world` gloo processes: this rank's share of an epoch's training views, as the fine-tuning stage
    builds and shards them, saved per sample index."""
    import torch.distributed as dist

    from umt_cli.data.loaders import ShardedSampler
    from umt_cli.recipe import FinetuneRecipe, load_recipe
    from umt_cli.recipe.catalog import resolve_recipe
    from umt_cli.stages.finetune import build_dataset

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        recipe = load_recipe(resolve_recipe("quickstart/finetune"), recipe_args, expect=FinetuneRecipe)
        dataset = build_dataset(recipe, status_dir=None)
        sampler = ShardedSampler(len(dataset), batch_size=2, seed=recipe.run.seed, rank=rank, world_size=world)
        sampler.set_epoch(1)
        torch.save({index: dataset[(epoch, index)].video for epoch, index in sampler}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_the_views_are_the_same_on_one_and_two_processes(synthetic_dir, tmp_path):
    """The official augmentation (RandAugment, crop, erasing, two views a clip) of every training clip of an epoch
    is the same computed by one process or shared between two (each in a gloo group, as under torchrun)."""
    import torch.multiprocessing as mp

    args = [f"data.train_list={synthetic_dir / 'train.csv'}", f"data.classes={synthetic_dir / 'classes.txt'}",
            "~init.checkpoint", "augment.erasing=1.0"]  # fmt: skip
    views = {}
    for world in (1, 2):
        out = tmp_path / f"views{world}"
        mp.spawn(_views_on_rank, args=(world, args, str(tmp_path / f"store{world}"), str(out)), nprocs=world)
        shares = [torch.load(f"{out}.{rank}") for rank in range(world)]
        assert world == 1 or not set(shares[0]) & set(shares[1])  # each clip on one process
        views[world] = {index: video for share in shares for index, video in share.items()}
    assert sorted(views[1]) == sorted(views[2]) == list(range(8))
    for index, video in views[1].items():
        assert video.shape == (2, 3, 4, 64, 64)
        assert torch.equal(video, views[2][index]), index
