"""The shipped NODDI estimator on real data (DIPY's small_101D) and on a held-out phantom."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from mrinets.data.templates import load_dipy_dwi
from mrinets.io.gradients import fsl_to_array_frame
from mrinets.physics.diffusion import GradientScheme
from mrinets.pipelines import microstructure as ms
from mrinets.pipelines.microstructure import experiment as ex


@pytest.fixture(scope="module")
def real():
    image, bvals, bvecs = load_dipy_dwi("small_101D")
    scheme = GradientScheme(bvals, fsl_to_array_frame(bvecs, image.source.affine, image.source.to_ras))
    return image, scheme


def test_card_names_the_commands():
    model = ms.load_model()
    assert model.scheme.same_as(ms.target_scheme())
    for stage in ("pretrain", "finetune"):
        assert model.card[stage]["command"].startswith(f"mrinets microstructure {stage}")
    assert "held_out" in model.card


def test_real_scan_agrees_with_the_full_scheme_fit(real):
    image, scheme = real
    fit = ms.fit_reference(image, scheme)
    net = ms.predict(image, scheme, config=ms.MicrostructureConfig(device="cpu"))
    assert net.measures["resampled"] is True  # 102 volumes, 54 b-values: interpolated onto the network's 31
    both = fit.mask & net.mask
    assert both.sum() > 300
    # Measured: r = 0.950 (ICVF), 0.964 (ISOVF), 0.900 (ODI) over the 600 voxels.
    r = {p: np.corrcoef(net.maps[p][both], fit.maps[p][both])[0, 1] for p in ms.PARAMETERS}
    assert min(r.values()) > 0.85, r
    # Where the tensor FA is high, the fibres are coherent: ODI must be low.
    from mrinets.physics.diffusion.amico import NoddiModel

    fa = NoddiModel(scheme).fit(image.data, both).fa
    rho = spearmanr(fa[both], net.maps["odi"][both]).statistic
    assert rho < -0.85, rho  # measured -0.929 (the full-scheme fit: -0.939)


def test_held_out_phantom_beats_the_fit_on_the_same_scan():
    crop = ((70, 130), (100, 160), (70, 100))
    subject = ex.target_subject(ex.TEST_SEED_START + 77, crop=crop)
    net = ex.evaluate(ms.load_model(), [subject], device="cpu")
    fit = ex.evaluate_fit([subject])
    assert net["mae_mean"] < 0.8 * fit["mae_mean"], (net["mae_mean"], fit["mae_mean"])
