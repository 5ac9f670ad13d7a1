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
    mni = load_mni()
    # the bodies of the lateral ventricles sit about 14 mm right/left of the midline, 15 mm above the AC
    ijk = np.round(np.linalg.solve(mni.affine, [14.0, -15.0, 15.0, 1.0])[:3]).astype(int)
    ijk_l = np.round(np.linalg.solve(mni.affine, [-14.0, -15.0, 15.0, 1.0])[:3]).astype(int)
    region = mni.csf.data[ijk[0] - 3: ijk[0] + 4, ijk[1] - 3: ijk[1] + 4, ijk[2] - 3: ijk[2] + 4]
    region_l = mni.csf.data[ijk_l[0] - 3: ijk_l[0] + 4, ijk_l[1] - 3: ijk_l[1] + 4, ijk_l[2] - 3: ijk_l[2] + 4]
    assert region.max() > 0.8 and region_l.max() > 0.8
    assert mni.mask.data[tuple(ijk)] == 1


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
