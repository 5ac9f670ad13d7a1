"""Quality-control pictures: three orthogonal slices of a volume, to scale.

Images inside mrinets are RAS+ arrays, so the anatomical direction of every
array axis is known. Panels are drawn in the radiological convention (the
patient's right on the viewer's left; sagittal with anterior on the left), the
convention is written on the figure and each panel edge carries its letter
(R/L, A/P, S/I). Every panel is drawn in millimetres (``imshow`` ``extent``),
with the panels' widths proportional to their field of view, so anisotropic
voxels (0.9 x 0.9 x 5 mm) are not squashed and all panels share one scale.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas, not
pyplot, so no global state or open-figure registry is touched and nothing needs
closing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from mrinets.io.nifti import Image
from mrinets.io.output import atomic_path

__all__ = ["qc_png", "marks_png", "slice_extents", "default_center", "CONVENTION"]

CONVENTION = "radiological convention: patient's right on viewer's left"

#: Name, fixed array axis, (horizontal axis, vertical axis), letters of the
#: (left, right, bottom, top) edges as displayed.
_VIEWS = (
    ("axial", 2, (0, 1), ("R", "L", "P", "A")),
    ("coronal", 1, (0, 2), ("R", "L", "I", "S")),
    ("sagittal", 0, (1, 2), ("A", "P", "I", "S")),
)
_DPI = 100
_FIG_WIDTH_IN = 12.0
_FG = "white"
_CONTOUR_COLOR = "#00e5ff"
_OUTLINE = [patheffects.withStroke(linewidth=2, foreground="black")]
#: Overlay values at or below this fraction of the overlay range are left
#: transparent so that near-zero probabilities do not tint the whole brain.
_OVERLAY_FLOOR = 0.05


def slice_extents(shape, voxel_size) -> dict[str, tuple[float, float, float, float]]:
    """Physical ``imshow`` extents (left, right, bottom, top) in mm of each view.

    Parameters
    ----------
    shape : sequence of 3 int
        Spatial shape (X, Y, Z) of the RAS+ array.
    voxel_size : sequence of 3 float
        Voxel edge lengths in mm along the array axes.

    Returns
    -------
    dict
        ``{"axial": ..., "coronal": ..., "sagittal": ...}``; each extent starts at
        0 and spans the number of voxels times their size (pixel edges, not
        centres, as ``imshow`` expects).

    Examples
    --------
    >>> slice_extents((100, 120, 30), (0.9, 0.9, 5.0))["coronal"]
    (0.0, 90.0, 0.0, 150.0)
    """
    shape = tuple(int(s) for s in shape)
    size = np.asarray(voxel_size, dtype=np.float64)
    if len(shape) != 3 or size.shape != (3,):
        raise ValueError(f"shape and voxel_size must have 3 entries, got {shape} and {tuple(size)}")
    if np.any(size <= 0):
        raise ValueError(f"voxel_size must be positive, got {tuple(size)}")
    fov = [float(n * d) for n, d in zip(shape, size)]
    return {name: (0.0, fov[h], 0.0, fov[v]) for name, _, (h, v), _ in _VIEWS}


def default_center(shape, *, overlay=None, contours=None, labels=None) -> tuple[int, int, int]:
    """Voxel through which the slices pass when ``center`` is not given.

    The centre of mass of the first of ``overlay`` (its positive part),
    ``contours`` or ``labels`` (non-zero voxels) that holds anything; else the
    centre of the volume.
    """
    shape = tuple(int(s) for s in shape)
    for weights in (overlay, contours, labels):
        if weights is None:
            continue
        w = np.asarray(weights, dtype=np.float64)
        w = np.clip(np.nan_to_num(w), 0, None) if weights is overlay else (w != 0).astype(np.float64)
        total = w.sum()
        if total > 0:
            grids = np.ogrid[tuple(slice(0, n) for n in shape)]
            com = [float((w * g).sum() / total) for g in grids]
            return tuple(int(np.clip(round(c), 0, n - 1)) for c, n in zip(com, shape))  # type: ignore[return-value]
    return tuple(n // 2 for n in shape)  # type: ignore[return-value]


def _as_volume(value, name: str, shape: tuple[int, int, int]) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value.data if isinstance(value, Image) else value)
    if array.shape != shape:
        raise ValueError(f"{name} of shape {array.shape} does not fit the image grid {shape}")
    return array


def _window(data: np.ndarray, vmin, vmax) -> tuple[float, float]:
    """1-99 percentiles of the finite non-zero voxels, for whichever end is not given."""
    if vmin is None or vmax is None:
        values = data[np.isfinite(data) & (data != 0)]
        lo, hi = np.percentile(values, [1, 99]) if values.size else (0.0, 1.0)
        if hi <= lo:  # a constant image: widen so the colour scale is defined
            lo, hi = lo - 0.5, hi + 0.5
        vmin = float(lo) if vmin is None else vmin
        vmax = float(hi) if vmax is None else vmax
    if not vmin < vmax:
        raise ValueError(f"vmin must be below vmax, got vmin={vmin} and vmax={vmax}")
    return float(vmin), float(vmax)


def _overlay_window(overlay: np.ndarray, vmin, vmax) -> tuple[float, float]:
    finite = overlay[np.isfinite(overlay)]
    if vmin is None:
        vmin = 0.0
    if vmax is None:
        positive = finite[finite > vmin]
        vmax = float(positive.max()) if positive.size else vmin + 1.0
    if not vmin < vmax:
        raise ValueError(f"overlay_vmin must be below overlay_vmax, got {vmin} and {vmax}")
    return float(vmin), float(vmax)


def _plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """2D slice with rows = vertical axis (for ``origin="lower"``), columns as displayed."""
    # Radiological display: the high-index end of the horizontal axis (R in
    # axial/coronal, A in sagittal) goes to the viewer's left.
    return np.take(volume, index, axis=axis).T[:, ::-1]


def _label_rgba(labels: np.ndarray, alpha: float) -> np.ndarray:
    values = np.unique(labels[labels != 0])
    cmap_name = "tab10" if values.size <= 10 else "tab20"
    palette = colormaps[cmap_name].colors
    # Colour by rank so that sparse label values (e.g. 2, 41, 1024) stay distinct.
    rank = np.searchsorted(values, labels)
    rgba = np.zeros(labels.shape + (4,))
    inside = labels != 0
    rgba[inside, :3] = np.asarray(palette)[rank[inside] % len(palette)]
    rgba[inside, 3] = alpha
    return rgba


def _letters(ax, letters: tuple[str, str, str, str], extent: tuple[float, float, float, float]) -> None:
    """Direction letters just inside the image edges (data coordinates, so they
    hug the picture whatever the axes box), outlined to stay legible on bright tissue."""
    left, right, bottom, top = letters
    width, height = extent[1], extent[3]
    pad = 0.015 * max(width, height)
    style = dict(color=_FG, fontsize=10, fontweight="bold", path_effects=_OUTLINE)
    ax.text(pad, height / 2, left, ha="left", va="center", **style)
    ax.text(width - pad, height / 2, right, ha="right", va="center", **style)
    ax.text(width / 2, pad, bottom, ha="center", va="bottom", **style)
    ax.text(width / 2, height - pad, top, ha="center", va="top", **style)


def _scale_bar(ax, extent: tuple[float, float, float, float]) -> None:
    """A 50 mm (or 10 mm on small fields of view) bar, so the reader can judge size."""
    width, height = extent[1], extent[3]
    length = 50.0 if width >= 150 else 10.0
    x0, y0 = width - length - 0.04 * width, 0.04 * height
    ax.plot([x0, x0 + length], [y0, y0], color=_FG, linewidth=2, solid_capstyle="butt")
    ax.text(x0 + length / 2, y0 + 0.015 * height, f"{length:g} mm", color=_FG, fontsize=7,
            ha="center", va="bottom", path_effects=_OUTLINE)


def _colorbar(fig: Figure, cax, mappable, label: str | None) -> None:
    # A bar as tall as the figure dwarfs the slices: keep the middle 60 %, half as wide.
    box = cax.get_position()
    cax.set_position([box.x0, box.y0 + 0.2 * box.height, 0.5 * box.width, 0.6 * box.height])
    bar = fig.colorbar(mappable, cax=cax)
    bar.ax.tick_params(colors=_FG, labelsize=8)
    bar.outline.set_edgecolor(_FG)
    if label:
        bar.set_label(label, color=_FG, fontsize=9)


def qc_png(
    image: Image,
    path: str | os.PathLike,
    *,
    overlay=None,
    contours=None,
    labels=None,
    title: str | None = None,
    cmap: str = "gray",
    overlay_cmap: str = "hot",
    vmin: float | None = None,
    vmax: float | None = None,
    overlay_vmin: float | None = None,
    overlay_vmax: float | None = None,
    center=None,
    alpha: float = 0.6,
    colorbar_label: str | None = None,
    overlay_label: str = "overlay",
) -> Path:
    """Write a PNG of axial, coronal and sagittal slices of a 3D image.

    Parameters
    ----------
    image : Image
        3D RAS+ image shown in greyscale (or ``cmap``).
    path : str or path-like
        Destination ``.png``; written atomically.
    overlay : ndarray or Image, optional
        Continuous map on the same grid (lesion probability, for instance),
        drawn with ``overlay_cmap`` and its own colourbar; values at or below
        ``overlay_vmin`` (default 0) plus 5 % of the overlay range are transparent.
    contours : ndarray or Image, optional
        Binary mask whose outline is drawn.
    labels : ndarray or Image, optional
        Integer label map, filled with distinct colours (``tab10``/``tab20``).
    title : str, optional
        Figure title.
    cmap, overlay_cmap : str
        Matplotlib colormap names of the image and of the overlay.
    vmin, vmax : float, optional
        Display window of the image; default the 1st and 99th percentiles of
        its non-zero voxels.
    overlay_vmin, overlay_vmax : float, optional
        Colour range of the overlay; default 0 and the overlay maximum.
    center : sequence of 3 int, optional
        Voxel (i, j, k) the slices pass through; default the centre of mass of
        ``overlay``, ``contours`` or ``labels`` (the first given), else the
        centre of the volume.
    alpha : float
        Opacity of the overlay and of the label colours, in [0, 1].
    colorbar_label : str, optional
        When given, a colourbar of the image window is drawn with this label.
    overlay_label : str
        Label of the overlay's colourbar.

    Returns
    -------
    Path
        ``path``.
    """
    if not isinstance(image, Image):
        raise ValueError(f"image must be an mrinets Image, got {type(image).__name__}")
    if image.data.ndim != 3:
        raise ValueError(f"image must be 3D, got shape {image.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    shape = image.spatial_shape
    data = np.asarray(image.data, dtype=np.float64)
    overlay = _as_volume(overlay, "overlay", shape)
    contours = _as_volume(contours, "contours", shape)
    labels = _as_volume(labels, "labels", shape)
    if center is None:
        center = default_center(shape, overlay=overlay, contours=contours, labels=labels)
    else:
        center = tuple(int(round(c)) for c in center)
        if len(center) != 3 or any(not 0 <= c < n for c, n in zip(center, shape)):
            raise ValueError(f"center must be 3 voxel indices inside {shape}, got {center}")
    vmin, vmax = _window(data, vmin, vmax)
    overlay_norm = None
    if overlay is not None:
        lo, hi = _overlay_window(overlay.astype(np.float64), overlay_vmin, overlay_vmax)
        overlay_norm = Normalize(lo, hi)
        floor = lo + _OVERLAY_FLOOR * (hi - lo)
    extents = slice_extents(shape, image.voxel_size)
    world = image.affine @ np.array([*center, 1.0])

    widths = [extents[name][1] for name, *_ in _VIEWS]
    heights = [extents[name][3] for name, *_ in _VIEWS]
    n_bars = int(colorbar_label is not None) + int(overlay is not None)
    bar_w = 0.035 * sum(widths)
    panel_in = 0.9 * _FIG_WIDTH_IN * sum(widths) / (sum(widths) + n_bars * 2.5 * bar_w)
    fig_h = min(max(panel_in * max(heights) / sum(widths) + 1.3, 3.0), 10.0)
    fig = Figure(figsize=(_FIG_WIDTH_IN, fig_h), dpi=_DPI, facecolor="black")
    FigureCanvasAgg(fig)
    ratios = widths + [bar_w] * n_bars
    grid = fig.add_gridspec(1, len(ratios), width_ratios=ratios, left=0.02, right=0.95, bottom=0.1,
                            top=1.0 - 0.9 / fig_h, wspace=0.08)

    base = overlay_img = None
    for col, (name, axis, _, letters) in enumerate(_VIEWS):
        ax = fig.add_subplot(grid[0, col])
        ax.set_facecolor("black")
        extent = extents[name]
        base = ax.imshow(_plane(data, axis, center[axis]), cmap=cmap, vmin=vmin, vmax=vmax,
                         origin="lower", extent=extent, aspect="equal")
        if labels is not None:
            ax.imshow(_label_rgba(_plane(labels, axis, center[axis]), alpha), origin="lower",
                      extent=extent, aspect="equal", interpolation="nearest")
        if overlay is not None:
            plane = _plane(overlay.astype(np.float64), axis, center[axis])
            overlay_img = ax.imshow(np.ma.masked_where(~(plane > floor), plane), cmap=overlay_cmap,
                                    norm=overlay_norm, alpha=alpha, origin="lower", extent=extent,
                                    aspect="equal", interpolation="nearest")
        if contours is not None:
            mask = _plane(contours != 0, axis, center[axis]).astype(np.float64)
            if mask.min() < 0.5 < mask.max():  # contour() warns on slices without an edge
                ax.contour(mask, levels=[0.5], colors=_CONTOUR_COLOR, linewidths=0.9, origin="lower",
                           extent=extent)
        _letters(ax, letters, extent)
        if col == 0:
            _scale_bar(ax, extent)
        ax.set_axis_off()
        # World position of the slice as a radiologist reads it: "L 37.3 mm", not "x = -37.3".
        side = ("RAS" if world[axis] >= 0 else "LPI")[axis]
        ax.set_title(f"{name}  {'ijk'[axis]}={center[axis]}/{shape[axis]}  ({side} {abs(world[axis]):.1f} mm)",
                     color=_FG, fontsize=9)
    col = len(_VIEWS)
    if colorbar_label is not None:
        _colorbar(fig, fig.add_subplot(grid[0, col]), base, colorbar_label)
        col += 1
    if overlay is not None:
        _colorbar(fig, fig.add_subplot(grid[0, col]), overlay_img, overlay_label)

    size = " x ".join(f"{s:.3g}" for s in image.voxel_size)
    if title:
        fig.suptitle(title, color=_FG, fontsize=12, y=1.0 - 0.12 / fig_h, va="top")
    fig.text(0.02, 0.02, f"{CONVENTION}   |   grid {shape[0]}x{shape[1]}x{shape[2]}, voxels {size} mm   |   "
             f"window [{vmin:.4g}, {vmax:.4g}]", color="#bbbbbb", fontsize=8, ha="left", va="bottom")

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, facecolor=fig.get_facecolor())
    return path


def marks_png(
    image: Image,
    path: str | os.PathLike,
    centres,
    *,
    ids=None,
    title: str | None = None,
    max_panels: int = 12,
    radius_mm: float = 6.0,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    """Write a PNG of axial slices, one through each marked point, each point ringed and numbered.

    Parameters
    ----------
    image : Image
        3D RAS+ image shown in greyscale.
    path : str or path-like
        Destination ``.png``; written atomically.
    centres : sequence of 3-vectors
        Voxel coordinates (i, j, k) of the points (microbleeds, say).
    ids : sequence, optional
        Labels written beside the rings (default 1, 2, ...).
    title : str, optional
    max_panels : int
        At most this many slices; points beyond are listed as a count. Points
        on one slice share its panel.
    radius_mm : float
        Radius of the rings.
    vmin, vmax : float, optional
        Display window (default the 1st and 99th percentiles of non-zero voxels).

    Returns
    -------
    Path
    """
    if not isinstance(image, Image):
        raise ValueError(f"image must be an mrinets Image, got {type(image).__name__}")
    if image.data.ndim != 3:
        raise ValueError(f"image must be 3D, got shape {image.shape}")
    if max_panels < 1:
        raise ValueError(f"max_panels must be at least 1, got {max_panels}")
    from matplotlib.patches import Circle

    shape = image.spatial_shape
    data = np.asarray(image.data, dtype=np.float64)
    pts = np.asarray(centres, dtype=float).reshape(-1, 3)
    ids = list(range(1, len(pts) + 1)) if ids is None else list(ids)
    if len(ids) != len(pts):
        raise ValueError(f"ids ({len(ids)}) and centres ({len(pts)}) differ in number")
    vmin, vmax = _window(data, vmin, vmax)
    slices = sorted({int(np.clip(round(p[2]), 0, shape[2] - 1)) for p in pts})
    shown, hidden = slices[:max_panels], slices[max_panels:]
    if not shown:
        shown = [shape[2] // 2]
    extent = slice_extents(shape, image.voxel_size)["axial"]
    cols = min(len(shown), 4)
    rows = int(np.ceil(len(shown) / cols))
    panel_w = _FIG_WIDTH_IN / 4
    aspect = (extent[3] - extent[2]) / max(extent[1] - extent[0], 1e-6)
    fig = Figure(figsize=(panel_w * cols, panel_w * aspect * rows + 0.8), dpi=_DPI, facecolor="black")
    FigureCanvasAgg(fig)
    size = image.voxel_size
    for n, k in enumerate(shown):
        ax = fig.add_subplot(rows, cols, n + 1)
        ax.set_facecolor("black")
        ax.imshow(_plane(data, 2, k), cmap="gray", vmin=vmin, vmax=vmax, origin="lower", extent=extent,
                  aspect="equal")
        for p, label in zip(pts, ids):
            if int(np.clip(round(p[2]), 0, shape[2] - 1)) != k:
                continue
            # Displayed mm from the panel's edges; the x axis is mirrored (radiological, as _plane draws it).
            xy = ((shape[0] - p[0] - 0.5) * size[0], (p[1] + 0.5) * size[1])
            ax.add_patch(Circle(xy, radius_mm, fill=False, edgecolor=_CONTOUR_COLOR, linewidth=1.2))
            ax.text(xy[0] + radius_mm, xy[1] + radius_mm, str(label), color=_CONTOUR_COLOR, fontsize=9,
                    path_effects=_OUTLINE)
        _letters(ax, ("R", "L", "P", "A"), extent)
        ax.set_axis_off()
        ax.set_title(f"axial k={k}/{shape[2]}", color=_FG, fontsize=9)
    note = f"   |   {len(hidden)} more slices with marks not shown" if hidden else ""
    if title:
        fig.suptitle(title, color=_FG, fontsize=12)
    fig.text(0.01, 0.01, f"{CONVENTION}{note}", color="#bbbbbb", fontsize=7, ha="left", va="bottom")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, facecolor=fig.get_facecolor())
    return path
