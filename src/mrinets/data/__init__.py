"""Shipped real data (templates) and synthetic subjects with ground truth (phantoms)."""
