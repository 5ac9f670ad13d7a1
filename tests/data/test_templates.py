"""Shipped real data: MNI152 maps with derived CSF/mask, DIPY scans and gradient tables."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from mrinets.data.templates import DIPY_SCHEMES, load_dipy_dwi, load_dipy_scheme, load_mni


def test_mni_maps_shapes_ranges_and_volumes():
    mni = load_mni()
    assert mni.t1.shape == (197, 233, 189)
    assert nib.aff2axcodes(mni.affine) == ("R", "A", "S")
    np.testing.assert_allclose(mni.t1.voxel_size, 1.0)
    for name in ("gm", "wm", "csf", "mask"):
        data = getattr(mni, name).data
        assert data.min() >= 0 and data.max() <= 1, name
    ml = {name: float(getattr(mni, name).data.sum()) / 1000 for name in ("gm", "wm", "csf", "mask")}
    # MNI152 2009a is an enlarged average brain (about 1.9 L with cerebellum and brainstem).
    assert 1500 < ml["mask"] < 2100
    assert 500 < ml["gm"] < 1100 and 450 < ml["wm"] < 800
    assert 60 < ml["csf"] < 400
    # tissue fractions do not exceed one inside the brain
    total = mni.gm.data + mni.wm.data + mni.csf.data
    assert total[mni.mask.data > 0].max() <= 1.0 + 1e-5


def test_mni_ventricles_are_csf():
    """The two lateral ventricles come out as large, mirror-image CSF regions."""
    from scipy import ndimage

    mni = load_mni()
    labels, _ = ndimage.label(mni.csf.data > 0.7)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    centres = []
    for i in np.argsort(sizes)[::-1][:4]:
        com = ndimage.center_of_mass(labels == i)
        centres.append((mni.affine @ [*com, 1.0])[:3])
    lateral = [c for c in centres if 8 < abs(c[0]) < 20 and -30 < c[1] < 0 and 5 < c[2] < 25]
    assert len(lateral) == 2
    assert lateral[0][0] * lateral[1][0] < 0  # one on each side


def test_mni_is_cached():
    assert load_mni() is load_mni()


@pytest.mark.parametrize("name, n_volumes", [("small_101D", 102), ("small_64D", 65)])
def test_dipy_scans(name, n_volumes):
    image, bvals, bvecs = load_dipy_dwi(name)
    assert image.data.ndim == 4 and image.shape[3] == n_volumes == bvals.size == bvecs.shape[0]
    weighted = bvals > 50
    np.testing.assert_allclose(np.linalg.norm(bvecs[weighted], axis=1), 1.0, atol=1e-6)
    assert (~weighted).any()


def test_dipy_schemes():
    shells = {name: sorted(set(np.round(load_dipy_scheme(name)[0], -2))) for name in DIPY_SCHEMES}
    assert shells["gtab_isbi2013_2shell"] == [0, 1500, 2500]
    assert shells["gtab_3shell"] == [0, 1000, 2000, 3500]
    bvals, bvecs = load_dipy_scheme("gtab_3shell")
    np.testing.assert_allclose(np.linalg.norm(bvecs[bvals > 0], axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="name must be one of"):
        load_dipy_scheme("nope")
