"""The training loader's order and augmentation depend only on (seed, epoch), not on what was drawn
before, nor on the number of worker processes."""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import Compose, RandAxisFlipd, RandRotate90d

from vmunet.data.common import transformed_dataset
from vmunet.data.sampling import EpochSampler, EpochSeededDataset, epoch_seeded_loader, item_seed


def _dataset(n: int = 10):
    items = [{"image": np.arange(16, dtype=np.float32).reshape(1, 4, 4) + 100 * i, "label": np.zeros((1, 4, 4))}
             for i in range(n)]
    tf = Compose([RandRotate90d(keys=["image", "label"], prob=1.0, max_k=3),
                  RandAxisFlipd(keys=["image", "label"], prob=1.0)])
    return transformed_dataset(items, tf, cache=True)


def test_sampler_order_is_the_distributed_sampler_permutation_of_seed_plus_epoch():
    ds = _dataset()
    sampler = EpochSampler(ds, seed=5, epoch=3)
    keys = list(sampler)
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(5 + 3)).tolist()
    assert keys == [(3, i) for i in expected]
    sampler.set_epoch(4)
    assert [i for _, i in sampler] == torch.randperm(10, generator=torch.Generator().manual_seed(9)).tolist()


def test_item_is_the_same_whatever_was_drawn_before():
    ds = EpochSeededDataset(_dataset(), seed=1)
    first = ds[(2, 7)]["image"]
    for key in [(0, 1), (2, 3), (5, 7), (2, 0)]:
        ds[key]
    again = ds[(2, 7)]["image"]
    assert torch.equal(torch.as_tensor(first), torch.as_tensor(again))
    # and it is what the transform gives when seeded with item_seed(1, 2, 7) by hand
    ref_ds = _dataset()
    ref_ds.transform.set_random_state(seed=item_seed(1, 2, 7))
    assert torch.equal(torch.as_tensor(ref_ds[7]["image"]), torch.as_tensor(first))
    # other epochs draw other augmentations (24 rot/flip outcomes: 6 epochs cannot all agree by chance)
    others = [torch.as_tensor(ds[(e, 7)]["image"]) for e in range(6)]
    assert any(not torch.equal(others[0], o) for o in others[1:])


def test_batches_do_not_depend_on_the_number_of_workers():
    def batches(workers):
        loader = epoch_seeded_loader(_dataset(), batch_size=3, num_workers=workers, pin_memory=False, epoch=2, seed=4)
        return [b["image"] for b in loader]

    zero, two = batches(0), batches(2)
    assert len(zero) == 4
    for a, b in zip(zero, two, strict=True):
        assert torch.equal(a, b)


def test_paper_augmentation_is_the_same_whatever_was_drawn_before():
    """The paper augmentation draws from two streams of its own (branches, then k / axis / angle):
    the loader's per-item seeding must reset both, or an item would depend on the items before it."""
    from vmunet.data.transforms import paper_rot_flip_rotate

    items = [{"image": np.arange(36, dtype=np.float32).reshape(1, 6, 6) + 100 * i,
              "label": np.zeros((1, 6, 6))} for i in range(10)]
    ds = EpochSeededDataset(transformed_dataset(items, Compose(paper_rot_flip_rotate()), cache=True), seed=3)
    first = [np.asarray(ds[(1, i)]["image"]) for i in range(10)]
    for key in [(0, 4), (1, 2), (7, 7), (1, 9), (0, 0)]:
        ds[key]
    assert all(np.array_equal(np.asarray(ds[(1, i)]["image"]), first[i]) for i in range(10))
    assert any(not np.array_equal(first[i], items[i]["image"]) for i in range(10))  # something was drawn
