"""Real data, common schemes: each shipped network beside the model fit on subsets of a real multi-b scan.

DIPY's small_101D (102 volumes, 16 b-values from 320 to 4060 s/mm^2) is cut
into the shells of the common schemes (b920/b1850 for b1000/b2000, b920 alone
for single-shell b1000, b620/b1850 for b700/b2000, b920/1850/3060 for HCP).
The reference is the model fit of all 102 volumes; the network the registry
picks for each subset and the model fit of the same subset are compared with
it (Pearson r and MAE over the brain voxels), and with the tensor FA
(Spearman rho of ODI against FA: coherent fibres must have low dispersion).

    python benchmarks/bench_microstructure_schemes.py
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import spearmanr

from mrinets.data.templates import load_dipy_dwi
from mrinets.io.gradients import fsl_to_array_frame
from mrinets.physics.diffusion import GradientScheme
from mrinets.physics.diffusion.amico import NoddiModel
from mrinets.pipelines import microstructure as ms

SUBSETS = (("b1000/b2000 (b920/b1850)", (920.0, 1850.0)), ("b1000 (b920 only)", (920.0,)),
           ("b700/b2000 (b620/b1850)", (620.0, 1850.0)), ("b1000/2000/3000 (b920/1850/3060)", (920.0, 1850.0, 3060.0)))


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    image, bvals, bvecs = load_dipy_dwi("small_101D")
    scheme = GradientScheme(bvals, fsl_to_array_frame(bvecs, image.source.affine, image.source.to_ras))
    ref = ms.fit_reference(image, scheme)
    fa = NoddiModel(scheme).fit(image.data, ref.mask).fa
    shells = scheme.shell_values
    print("| scheme (subset of small_101D) | volumes | method | r ICVF / ISOVF / ODI | MAE ICVF / ISOVF / ODI "
          "| rho(FA, ODI) |")
    print("|---|---|---|---|---|---|")
    for label, keep_shells in SUBSETS:
        keep = np.flatnonzero(scheme.b0_mask | np.isin(shells, keep_shells))
        sub, data = scheme.subset(keep), image.with_data(image.data[..., keep])
        for method in ("network", "fit"):
            result = ms.predict(data, sub, config=ms.MicrostructureConfig(method=method, device="cpu"))
            both = result.mask & ref.mask
            r = [np.corrcoef(result.maps[p][both], ref.maps[p][both])[0, 1] for p in ms.PARAMETERS]
            mae = [np.mean(np.abs(result.maps[p][both] - ref.maps[p][both])) for p in ms.PARAMETERS]
            rho = spearmanr(fa[both], result.maps["odi"][both]).statistic
            name = f"network {result.measures['network']}" if result.measures["method"] == "network" else "fit"
            print(f"| {label} | {len(keep)} | {name} | {' / '.join(f'{v:.2f}' for v in r)} | "
                  f"{' / '.join(f'{v:.3f}' for v in mae)} | {rho:.2f} |")


if __name__ == "__main__":
    main()
