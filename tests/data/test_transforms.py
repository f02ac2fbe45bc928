"""The TransUNet augmentation branch probabilities and the ISIC pipeline's invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from vmunet.data.transforms import isic_transforms, rot_flip_rotate


def _branches(tf, n=400):
    img = np.arange(64, dtype=np.float32).reshape(1, 8, 8)
    reflections = [np.flip(img, 1), np.flip(img, 2), img.transpose(0, 2, 1), np.rot90(img, 2, (1, 2)).transpose(0, 2, 1)]
    counts = {"identity": 0, "rot_flip": 0, "rotate": 0}
    for _ in range(n):
        out = tf({"image": img.copy(), "label": img.copy()})
        x, y = np.asarray(out["image"]), np.asarray(out["label"])
        if np.array_equal(x, img):
            counts["identity"] += 1
            assert np.array_equal(y, img)
        elif any(np.array_equal(x, r) for r in reflections):
            counts["rot_flip"] += 1
            assert np.array_equal(y, x)  # the label got the same rot90 + flip
        else:
            counts["rotate"] += 1
    return {k: v / n for k, v in counts.items()}


def test_branch_weights_are_exactly_the_transunet_ones():
    """TransUNet: p 0.5 rot90 + flip, else p 0.5 rotation -> 0.5 / 0.25 / 0.25 (identity last);
    one branch off -> 0.5 / 0.5. Checked exactly: sampling 400 draws cannot tell 0.25 from 0.3
    (and enough draws to do so take minutes on a loaded CI machine)."""
    from monai.transforms import Compose as MonaiCompose
    from monai.transforms import Identityd, OneOf, RandAxisFlipd, RandRotate90d, RandRotated

    (both,) = rot_flip_rotate(True, True, 20.0)
    assert isinstance(both, OneOf)
    assert list(both.weights) == pytest.approx([0.5, 0.25, 0.25], abs=1e-12)
    rot_flip, rotate, identity = both.transforms
    assert isinstance(rot_flip, MonaiCompose)
    assert [type(t) for t in rot_flip.transforms] == [RandRotate90d, RandAxisFlipd]
    assert isinstance(rotate, RandRotated) and isinstance(identity, Identityd)
    assert rotate.rand_rotate.range_x == pytest.approx((-math.radians(20.0), math.radians(20.0)))
    (only_rot,) = rot_flip_rotate(False, True, 20.0)
    assert list(only_rot.weights) == pytest.approx([0.5, 0.5], abs=1e-12)
    assert [type(t) for t in only_rot.transforms] == [RandRotated, Identityd]
    (only_flip,) = rot_flip_rotate(True, False)
    assert list(only_flip.weights) == pytest.approx([0.5, 0.5], abs=1e-12)


def test_rot_flip_else_rotate_probabilities():
    """The branches do what their names say, at about their rates (the exact weights: above)."""
    tf = Compose(rot_flip_rotate(True, True, 20.0))
    tf.set_random_state(seed=0)
    p = _branches(tf)
    assert p["rot_flip"] == pytest.approx(0.5, abs=0.07)
    assert p["rotate"] == pytest.approx(0.25, abs=0.07)
    assert p["identity"] == pytest.approx(0.25, abs=0.07)
    only_rot = Compose(rot_flip_rotate(False, True, 20.0))
    only_rot.set_random_state(seed=1)
    p = _branches(only_rot)
    assert p["rot_flip"] == 0 and p["rotate"] == pytest.approx(0.5, abs=0.08)
    assert rot_flip_rotate(False, False) == []


def test_label_follows_image_nearest():
    """Image and label get the same geometric transform; labels stay integer (nearest)."""
    tf = Compose(rot_flip_rotate(True, True, 20.0))
    tf.set_random_state(seed=3)
    lab = np.zeros((1, 16, 16), np.float32)
    lab[0, 3:9, 4:12] = 5
    for _ in range(30):
        out = tf({"image": lab * 10.0, "label": lab.copy()})
        lo = np.asarray(out["label"])
        assert set(np.unique(lo)) <= {0.0, 5.0}
        # Where the (bilinear) image is clearly inside/outside the object the label agrees.
        im = np.asarray(out["image"])
        assert np.all(lo[im > 45] == 5) and np.all(lo[im < 5] == 0)


def test_isic_pipeline_normalizes_and_keeps_binary():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (3, 20, 24)).astype(np.float32)
    mask = (rng.uniform(size=(1, 20, 24)) > 0.5).astype(np.float32)
    mean, std = [100.0, 110.0, 120.0], [50.0, 40.0, 30.0]
    ev = Compose(isic_transforms((20, 24), mean, std, augment=False))
    out = ev({"image": img.copy(), "label": mask.copy()})  # MONAI normalizes in place
    ref = (img - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    assert torch.allclose(out["image"], torch.as_tensor(ref, dtype=torch.float32), atol=1e-4)
    assert torch.equal(out["label"], torch.as_tensor(mask))
    tr = Compose(isic_transforms((32, 32), mean, std, augment=True))
    tr.set_random_state(seed=0)
    for _ in range(10):
        o = tr({"image": img.copy(), "label": mask.copy()})
        assert o["image"].shape == (3, 32, 32) and o["label"].dtype == torch.float32
        assert set(o["label"].unique().tolist()) <= {0.0, 1.0}


# --- VM-UNet datasets/dataset.py, verbatim (the random draws come from np.random there) -------------
def orig_random_rot_flip(image, label):
    k = np.random.randint(0, 4)
    image = np.rot90(image, k)
    label = np.rot90(label, k)
    axis = np.random.randint(0, 2)
    image = np.flip(image, axis=axis).copy()
    label = np.flip(label, axis=axis).copy()
    return image, label


def orig_random_rotate(image, label):
    from scipy import ndimage

    angle = np.random.randint(-20, 20)
    image = ndimage.rotate(image, angle, order=0, reshape=False)
    label = ndimage.rotate(label, angle, order=0, reshape=False)
    return image, label


@pytest.mark.parametrize("seed", range(6))
def test_paper_rot_flip_and_rotate_equal_the_original_functions(seed):
    from vmunet.data.transforms import rot_flip, rotate_nearest

    rng = np.random.default_rng(seed)
    image = rng.random((12, 10)).astype(np.float32)  # non-square: a wrong axis shows
    label = rng.integers(0, 9, (12, 10))
    np.random.seed(seed)
    k, axis = np.random.randint(0, 4), np.random.randint(0, 2)
    np.random.seed(seed)
    ref_img, ref_lab = orig_random_rot_flip(image, label)
    assert np.array_equal(rot_flip(image[None], k, axis)[0], ref_img)
    assert np.array_equal(rot_flip(label[None], k, axis)[0], ref_lab)
    np.random.seed(seed)
    angle = np.random.randint(-20, 20)
    np.random.seed(seed)
    ref_img, ref_lab = orig_random_rotate(image, label)
    assert np.array_equal(rotate_nearest(image[None], angle)[0], ref_img)
    assert np.array_equal(rotate_nearest(label[None], angle)[0], ref_lab)


def test_paper_augmentation_draws_like_the_original():
    from vmunet.data.transforms import paper_rot_flip_rotate

    (tf,) = paper_rot_flip_rotate()
    tf.set_random_state(seed=0)
    draws = [tf.randomize() for _ in range(4000)]
    kinds = [d[0] for d in draws]
    # P(rot_flip) = 0.5, P(rotate) = 0.5 * 0.5, P(none) = 0.25; 4000 draws: 3 sigma is about 0.024
    assert abs(kinds.count("rot_flip") / 4000 - 0.5) < 0.03
    assert abs(kinds.count("rotate") / 4000 - 0.25) < 0.03
    assert sorted({d[1] for d in draws if d[0] == "rot_flip"}) == [0, 1, 2, 3]  # k = 0 included
    assert sorted({d[1] for d in draws if d[0] == "rotate"}) == list(range(-20, 20))  # integers, 20 excluded
    # image and label get the same draw
    img = np.arange(80, dtype=np.float32).reshape(1, 8, 10)
    for _ in range(20):
        out = tf({"image": img, "label": img.astype(np.int64)})
        assert np.array_equal(out["image"], out["label"].astype(np.float32))


def test_isic_paper_normalization_equals_the_original_mynormalize():
    """VM-UNet utils.myNormalize (isic17 train stats) vs the paper pipeline and the inference record."""
    from vmunet.data.preprocessing import apply_intensity

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3)).astype(np.float64)  # (H, W, C) as the original reads it
    mean, std = 159.922, 28.871
    z = (rgb - mean) / std
    ref = (z - z.min()) / (z.max() - z.min()) * 255.0
    chw = rgb.transpose(2, 0, 1).astype(np.float32)
    tf = Compose(isic_transforms((20, 30), [0.0] * 3, [1.0] * 3, augment=False, paper=True))
    out = tf({"image": chw, "label": np.zeros((1, 20, 30), np.float32)})
    np.testing.assert_allclose(np.asarray(out["image"]), ref.transpose(2, 0, 1), atol=2e-3)
    rec = {"mode": "minmax", "range": [0.0, 255.0]}
    np.testing.assert_allclose(apply_intensity(rgb, rec), ref, atol=2e-3)


def test_isic_paper_pipeline_resizes_the_mask_bilinearly_after_augmentation():
    mask = np.zeros((1, 16, 16), np.float32)
    mask[0, 4:12, 4:12] = 1
    tf = Compose(isic_transforms((24, 24), [0.0] * 3, [1.0] * 3, augment=False, paper=True))
    out = np.asarray(tf({"image": np.ones((3, 16, 16), np.float32), "label": mask})["label"])
    ref = torch.nn.functional.interpolate(torch.from_numpy(mask[None]), size=(24, 24), mode="bilinear",
                                          align_corners=False)[0].numpy()
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert ((out > 0) & (out < 1)).any()  # soft edges, as the original's TF.resize of the mask


@pytest.mark.parametrize("paper", [False, True])
def test_isic_flips_cover_both_axes(paper):
    # the VM-UNet ISIC recipe flips horizontally and vertically (p 0.5 each): over 60 draws all
    # four outcomes occur, and nothing else (rotation off, sizes unchanged)
    mask = np.zeros((1, 6, 8), np.float32)
    mask[0, 0, :3] = 1.0  # top-left corner, asymmetric in both axes
    mask[0, 1, 0] = 1.0
    img = np.repeat(mask * 100.0 + 1.0, 3, axis=0)
    tr = Compose(isic_transforms((6, 8), [0.0] * 3, [1.0] * 3, augment=True, rotation=False, paper=paper))
    tr.set_random_state(seed=1)
    outcomes = {"none": mask[0], "left-right": mask[0, :, ::-1], "up-down": mask[0, ::-1, :], "both": mask[0, ::-1, ::-1]}
    seen = set()
    for _ in range(60):
        label = np.asarray(tr({"image": img.copy(), "label": mask.copy()})["label"])[0]
        name = [k for k, v in outcomes.items() if np.array_equal(label >= 0.5, v >= 0.5)]
        assert len(name) == 1, label
        seen.add(name[0])
    assert seen == set(outcomes)


@pytest.mark.parametrize("paper", [False, True])
def test_isic_rotation_turns_the_mask_all_the_way_round(paper):
    # "random rotation in [0, 360) degrees": a blob right of the centre ends up in every quadrant
    # around it over 120 draws (p 0.5 each; half the circle would leave two quadrants empty)
    mask = np.zeros((1, 32, 32), np.float32)
    mask[0, 15:17, 24:28] = 1.0
    img = np.repeat(mask * 100.0 + 1.0, 3, axis=0)
    tr = Compose(isic_transforms((32, 32), [0.0] * 3, [1.0] * 3, augment=True, flips=False, paper=paper))
    tr.set_random_state(seed=3)
    quadrants = set()
    for _ in range(120):
        rows, cols = np.nonzero(np.asarray(tr({"image": img.copy(), "label": mask.copy()})["label"])[0] >= 0.5)
        dy, dx = 15.5 - rows.mean(), cols.mean() - 15.5  # up and right of the centre
        assert 8.0 < np.hypot(dx, dy) < 13.0  # turned about the centre, not moved or lost
        if abs(dx) > 1.0 and abs(dy) > 1.0:
            quadrants.add((dx > 0, dy > 0))
    assert quadrants == {(True, True), (True, False), (False, True), (False, False)}


def test_paper_augmentation_streams_follow_set_random_state():
    """Branches from ``random.Random(seed)``, k / axis / angle from ``RandomState(seed)``, in the
    original's order (a plain loop here); MONAI's seed handling (NumPy integers, modulo 2**32);
    a ``RandomState`` given instead of a seed gives reproducible draws too."""
    import random

    from vmunet.data.transforms import paper_rot_flip_rotate

    (tf,) = paper_rot_flip_rotate()

    def draws(**how) -> list[tuple]:
        tf.set_random_state(**how)
        return [tf.randomize() for _ in range(60)]

    branches, params = random.Random(9), np.random.RandomState(9)
    expected = []
    for _ in range(60):
        if branches.random() > 0.5:
            expected.append(("rot_flip", params.randint(0, 4), params.randint(0, 2)))
        elif branches.random() > 0.5:
            expected.append(("rotate", params.randint(-20, 20)))
        else:
            expected.append(("none",))
    assert draws(seed=9) == expected
    assert draws(seed=np.uint32(9)) == draws(seed=9 + 2**32) == expected
    assert draws(state=np.random.RandomState(4)) == draws(state=np.random.RandomState(4)) != expected
