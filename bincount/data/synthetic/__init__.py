"""Synthetic bin photos in the ABID on-disk layout, for the offline demo and the tests.

Each image is a fabric or cardboard bin seen from the front (back wall, side walls, floor, the
labelled lips), 1-5 items (boxes, bottles, bags, flat packages; a product may repeat), each with
one barcode label, placed so that every item stays at least ``MIN_VISIBLE`` visible and its label
uncovered, translucent elastic bands across the front, then lighting, blur, grain and JPEG
compression. The count must stay readable at 64x64 for a ResNet trained from scratch in minutes
on a CPU: realism is bounded by countability.

Every image draws from its own ``numpy`` generator seeded by ``(seed, count, index)``, so a set
is byte-identical for the same arguments and a larger ``per_class`` extends a smaller one.

``items`` makes the products and places them, ``render`` draws one bin photo, ``store`` writes
and keeps a whole set on disk (parameters, partial renders, the swap into place).
"""

from bincount.data.synthetic.render import render_bin
from bincount.data.synthetic.store import MARKER, render_synthetic

__all__ = ["MARKER", "render_bin", "render_synthetic"]
