"""Length buckets and the response mask."""

import numpy as np

from clo_mlx.batching import bucket_length, collate, length_sorted_batches


def test_buckets_bound_padding_and_shape_count():
    buckets = {bucket_length(n, 4096) for n in range(1, 2049)}
    assert len(buckets) <= 48
    for n in range(1, 2049):
        b = bucket_length(n, 4096)
        assert n <= b and (b - n) <= max(7, n // 8)
    assert bucket_length(175, 4096) == 176 and bucket_length(40, 4096) == 40
    assert bucket_length(2000, 2010) == 2010  # capped by max_len


def test_collate_marks_exactly_the_response_targets():
    seqs = [([5, 6, 7, 8, 9], 3), ([1, 2, 3], 1)]
    inputs, targets, mask = collate(seqs, 64)
    assert inputs.shape == targets.shape == mask.shape == (2, 8)
    np.testing.assert_array_equal(inputs[0, :4], [5, 6, 7, 8])
    np.testing.assert_array_equal(targets[0, :4], [6, 7, 8, 9])
    # targets[t] = ids[t+1] is a response token when t + 1 >= start
    np.testing.assert_array_equal(mask[0], [0, 0, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(mask[1], [1, 1, 0, 0, 0, 0, 0, 0])
    assert inputs[1, 2:].sum() == 0


def test_full_batches_cover_every_item():
    lengths = [5, 3, 9, 1, 7]
    batches = length_sorted_batches(lengths, 2, full=True)
    assert all(len(b) == 2 for b in batches)
    assert set(i for b in batches for i in b) == set(range(5))
    assert [lengths[i] for i in batches[0]] == [1, 3]


def test_response_start_rounds_down_to_an_eighth_of_the_length():
    from clo_mlx.batching import response_start

    mask = np.zeros((2, 64), np.float32)
    assert response_start(mask) == 0  # no response token: nothing to skip
    mask[0, 30:50] = 1
    mask[1, 21:40] = 1
    assert response_start(mask) == 16  # first response position 21, steps of 64 / 8 = 8
    mask[1, 5] = 1
    assert response_start(mask) == 0
    assert response_start(np.ones((1, 5), np.float32)) == 0
    short = np.zeros((1, 5), np.float32)
    short[0, 3:] = 1
    assert response_start(short) == 3  # length < 8: step 1
