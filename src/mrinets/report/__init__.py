"""Quality-control pictures and the HTML summary of a run."""

from __future__ import annotations

from mrinets.report.html import Section, write_html_report
from mrinets.report.qc import qc_png

__all__ = ["Section", "qc_png", "write_html_report"]
