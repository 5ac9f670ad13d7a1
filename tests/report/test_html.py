"""The HTML run summary: escaped, relative, self-contained when asked."""

from __future__ import annotations

import numpy as np
import pytest

import mrinets
from mrinets.report import Section, write_html_report
from mrinets.report.html import flatten, format_value

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


@pytest.fixture
def run(tmp_path):
    (tmp_path / "sub").mkdir()
    image = tmp_path / "sub" / "qc chi.png"
    image.write_bytes(PNG)
    nifti = tmp_path / "sub" / "chi.nii.gz"
    nifti.write_bytes(b"")
    sections = [
        Section(title="QSM <script>alert(1)</script>", images=[image], links=[nifti],
                measures={"rmse": 0.123456789, "n": 123456, "roi": {"caudate": {"error_ppm": np.float32(0.0123456)}}},
                text="first paragraph & more\n\nsecond <b>paragraph</b>"),
        Section(title="Table of runs", measures=[{"method": "tkd", "rmse": 1.0 / 3}, {"method": "nextqsm", "ssim": 0.9}]),
    ]
    return tmp_path, sections


def test_report_contains_titles_tables_and_relative_links(run):
    folder, sections = run
    out = write_html_report(folder / "index.html", title="mrinets demo", sections=sections,
                            meta={"command": "mrinets demo --out x <y>", "params": {"seed": 3}})
    assert out == folder / "index.html"
    page = out.read_text(encoding="utf-8")
    assert "<title>mrinets demo</title>" in page and "<h1>mrinets demo</h1>" in page
    assert "<script>" not in page
    assert "QSM &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "second &lt;b&gt;paragraph&lt;/b&gt;" in page
    assert "Table of runs" in page
    # Numbers to 4 significant digits, integers exact, nested keys dotted.
    assert ">0.1235<" in page and ">123456<" in page and ">0.3333<" in page
    assert "roi.caudate.error_ppm" in page and ">0.01235<" in page
    assert "params.seed" in page and "mrinets demo --out x &lt;y&gt;" in page
    # One row per dict, missing cells shown as a dash.
    assert page.count("<th>method</th>") == 1 and "nextqsm" in page and "\u2014" in page
    assert 'src="sub/qc%20chi.png"' in page and 'href="sub/chi.nii.gz"' in page
    assert str(folder) not in page
    assert "<details>" in page and mrinets.__version__ in page
    assert "data:image/png;base64" not in page


def test_embed_inlines_images(run):
    folder, sections = run
    page = write_html_report(folder / "index.html", title="t", sections=sections, embed=True).read_text()
    assert "data:image/png;base64,iVBORw0KGgo" in page
    assert 'src="sub/qc%20chi.png"' not in page


def test_embed_with_missing_image_raises_and_writes_nothing(tmp_path):
    sections = [Section(title="x", images=[tmp_path / "nope.png"])]
    with pytest.raises(ValueError, match=r"sections\[0\]\.images"):
        write_html_report(tmp_path / "index.html", title="t", sections=sections, embed=True)
    assert list(tmp_path.iterdir()) == []


def test_bad_measures_and_sections_name_themselves(tmp_path):
    with pytest.raises(ValueError, match=r"sections\[0\]\.measures"):
        write_html_report(tmp_path / "r.html", title="t", sections=[Section(title="x", measures=3.0)])
    with pytest.raises(ValueError, match=r"sections\[0\]"):
        write_html_report(tmp_path / "r.html", title="t", sections=["not a section"])
    with pytest.raises(ValueError, match="meta"):
        write_html_report(tmp_path / "r.html", title="t", sections=[], meta=["x"])


def test_images_outside_the_report_folder_get_dotdot_links(tmp_path):
    image = tmp_path / "qc.png"
    image.write_bytes(PNG)
    (tmp_path / "report").mkdir()
    page = write_html_report(tmp_path / "report" / "index.html", title="t",
                             sections=[Section(title="x", images=[image])]).read_text()
    assert 'src="../qc.png"' in page


def test_helpers():
    assert flatten({"a": {"b": {"c": 1}}, "d": 2}) == {"a.b.c": 1, "d": 2}
    assert format_value(float("nan")) == "nan"
    assert format_value(True) == "yes"
    assert format_value([117, 140, 110]) == "117, 140, 110"
    assert format_value(np.int64(7)) == "7"
    assert format_value(12345.678) == "1.235e+04"
