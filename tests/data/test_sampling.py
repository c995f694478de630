import pytest
import torch

from umt_cli.data.sampling import (
    build_frame_sampler,
    dense_indices,
    interval_indices,
    segment_view_indices,
    sparse_indices,
)
from umt_cli.recipe.sections import DenseSampling, SparseSampling


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_sparse_training_draws_one_frame_inside_each_segment():
    g = gen()
    for n in (8, 9, 15, 300, 301):
        for _ in range(50):
            indices = sparse_indices(n, 8, generator=g)
            avg = n // 8
            assert [i // avg if i < 8 * avg else 7 for i in indices] == list(range(8))
            assert all(i * avg <= x < (i + 1) * avg for i, x in enumerate(indices))


def test_sparse_training_reaches_every_offset():
    g = gen()
    seen = {sparse_indices(40, 8, generator=g)[0] for _ in range(400)}
    assert seen == set(range(5))


def test_sparse_evaluation_is_the_segment_middle():
    assert sparse_indices(300, 8, generator=None) == [18, 56, 93, 131, 168, 206, 243, 281]
    assert sparse_indices(8, 8, generator=None) == list(range(8))


def test_sparse_short_videos():
    assert sparse_indices(5, 8, generator=gen()) == [0] * 8  # official behaviour
    assert sparse_indices(5, 8, generator=gen(), short_video="pad") == [0, 0, 1, 1, 2, 3, 3, 4]


def test_same_generator_seed_gives_same_indices():
    assert sparse_indices(300, 8, generator=gen(3)) == sparse_indices(300, 8, generator=gen(3))
    assert sparse_indices(300, 8, generator=gen(3)) != sparse_indices(300, 8, generator=gen(4))


def test_dense_indices():
    g = gen()
    for _ in range(50):
        indices = dense_indices(100, 8, 4, generator=g)
        assert [b - a for a, b in zip(indices, indices[1:])] == [4] * 7
        assert 0 <= indices[0] and indices[-1] < 100
    assert dense_indices(100, 8, 4, generator=None)[0] == (100 - 29) // 2
    assert dense_indices(10, 8, 4, generator=g) == [0, 4, 8, 9, 9, 9, 9, 9]


def test_interval_training_never_draws_an_intervals_last_frame():
    g = gen()
    draws = [interval_indices(40, 4, generator=g) for _ in range(500)]
    for i in range(4):
        values = {d[i] for d in draws}
        assert values == set(range(10 * i, 10 * i + 9))  # [edge_i, edge_{i+1} - 2]


def test_interval_middle_and_padding():
    assert interval_indices(40, 4, generator=None) == [4, 14, 24, 34]
    assert interval_indices(2, 4, generator=None) == [0, 1, 1, 1]
    fallback = interval_indices(5, 4, generator=gen())  # an interval of one frame -> sorted random permutation
    assert fallback == sorted(fallback) and len(set(fallback)) == 4


def test_segment_views_match_the_official_formula():
    n, t, clips = 300, 8, 4
    seg = (n - 1) / t
    expected = [
        [min(int(round(seg * i)) + int(seg / (clips + 1) * (c + 1)), n - 1) for i in range(t)] for c in range(clips)
    ]
    assert segment_view_indices(n, t, num_clips=clips, generator=None) == expected
    (train,) = segment_view_indices(n, t, generator=gen())
    assert all(round(seg * i) <= x <= round(seg * (i + 1)) for i, x in enumerate(train))


@pytest.mark.parametrize("fn", [sparse_indices, interval_indices])
def test_invalid_lengths_raise(fn):
    with pytest.raises(ValueError):
        fn(0, 8, generator=None)


def test_build_frame_sampler_from_recipe_tables():
    sampler = build_frame_sampler(DenseSampling(stride=2), 4, train=False)
    assert sampler(100, gen()) == dense_indices(100, 4, 2, generator=None)
    train = build_frame_sampler(SparseSampling(), 8, train=True)
    assert train(300, gen(1)) == sparse_indices(300, 8, generator=gen(1))


def test_segment_sampler_is_the_classification_training_and_test_sampling():
    from umt_cli.data.sampling import FrameSampler, segment_view_indices

    train, test = FrameSampler("segment", 8, train=True), FrameSampler("segment", 8, train=False)
    for n in (5, 64, 300):
        expected = segment_view_indices(n, 8, generator=torch.Generator().manual_seed(n))[0]
        assert train(n, torch.Generator().manual_seed(n)) == expected
        assert test(n, None) == segment_view_indices(n, 8, generator=None)[0]
