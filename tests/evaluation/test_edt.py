"""The numba feature transform against scipy's ``distance_transform_edt(return_indices=True)``:
the same int32 indices, element for element (so the same pick among equally near features), on
random and structured masks in 1-3 dimensions, with and without anisotropic spacing (spacings
such as 0.76 and 3.0 make ties and near-ties between different offsets), any thread count."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from scipy import ndimage

from vmunet.evaluation.edt import PARALLEL_MIN_VOXELS, feature_transform


def scipy_ft(features: np.ndarray, sampling=None) -> np.ndarray:
    return ndimage.distance_transform_edt(~features, sampling=sampling, return_distances=False, return_indices=True)


SPACINGS = (0.76, 3.0, 1.0, 0.7, 2.5, 0.8, 1.7, 0.1)


def random_cases(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for i in range(count):
        ndim = 1 + i % 3
        shape = tuple(int(n) for n in rng.integers(1, 13, ndim))
        if i % 4 == 3:  # a ball's surface: many equally near features
            idx = np.indices(shape)
            centre = [rng.uniform(0, n) for n in shape]
            r2 = sum((idx[k] - centre[k]) ** 2 for k in range(ndim))
            mask = (r2 < rng.uniform(4, 40)) & (r2 >= rng.uniform(0, 4))
        else:
            mask = rng.random(shape) < rng.choice([0.01, 0.1, 0.5, 0.95])
        sampling = None if i % 2 else tuple(float(s) for s in rng.choice(SPACINGS, ndim))
        yield mask, sampling


def test_feature_transform_equals_scipy_index_for_index():
    checked = 0
    for mask, sampling in random_cases(seed=0, count=400):
        np.testing.assert_array_equal(feature_transform(mask, sampling), scipy_ft(mask, sampling))
        checked += mask.any()
    assert checked > 300  # masks with a feature (the others: scipy's "none" everywhere, also compared)


def test_the_parallel_kernel_on_every_thread_count():
    rng = np.random.default_rng(1)
    mask = rng.random((9, 70, 60)) < 0.02
    assert mask.size >= PARALLEL_MIN_VOXELS  # the parallel kernel, several 64-line tasks per pass
    mask[4, 10:60, 20] = True  # a long thin feature: long envelopes along axes 1 and 2
    ref = scipy_ft(mask, (3.0, 0.76, 0.76))
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            np.testing.assert_array_equal(feature_transform(mask, (3.0, 0.76, 0.76)), ref)
    finally:
        numba.set_num_threads(before)


def test_no_feature_all_features_and_bad_sampling():
    for mask in (np.zeros((3, 4), bool), np.ones((3, 4), bool)):
        np.testing.assert_array_equal(feature_transform(mask), scipy_ft(mask))
    assert feature_transform(np.zeros((3, 4), bool))[0].min() == -1  # "no feature", as scipy
    single = np.zeros((5, 6), bool)
    single[1, 4] = True
    ft = feature_transform(single, (2.0, 0.5))
    assert (ft[0] == 1).all() and (ft[1] == 4).all()
    with pytest.raises(ValueError, match=r"sampling must list one voxel size per axis \(2\)"):
        feature_transform(single, (1.0, 1.0, 1.0))
