import pytest

from umt_cli.data.loaders import ShardedSampler


def steps(sampler: ShardedSampler) -> list[list[int]]:
    items = [index for _, index in sampler]
    return [items[i : i + sampler.batch_size] for i in range(0, len(items), sampler.batch_size)]


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_split_each_global_batch_of_the_single_process_order(world):
    single = steps(ShardedSampler(50, batch_size=8, seed=3))
    ranks = [steps(ShardedSampler(50, batch_size=8 // world, seed=3, rank=r, world_size=world)) for r in range(world)]
    for step, global_batch in enumerate(single):
        assert sum((ranks[r][step] for r in range(world)), []) == global_batch


def test_epochs_reshuffle_and_resume_mid_epoch():
    sampler = ShardedSampler(40, batch_size=4, seed=0)
    first = steps(sampler)
    assert sorted(sum(first, [])) == list(range(40))
    sampler.set_epoch(1)
    assert steps(sampler) != first
    sampler.set_epoch(0, start_step=6)
    assert steps(sampler) == first[6:] and len(sampler) == 16
    state = sampler.state_dict()
    other = ShardedSampler(40, batch_size=4, seed=0)
    other.load_state_dict(state)
    assert steps(other) == first[6:]
    assert all(epoch == 0 for epoch, _ in other)


def test_drop_last_and_padding():
    assert ShardedSampler(10, batch_size=4).steps_per_epoch() == 2
    padded = ShardedSampler(10, batch_size=4, drop_last=False, shuffle=False)
    assert steps(padded) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
