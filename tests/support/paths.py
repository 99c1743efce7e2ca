"""Where the checkout, its scripts and configs, and the shared real ABID sample are."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
SCRIPTS = ROOT / "scripts"
SAMPLE = ROOT.parent / "shared" / "abid" / "sample"
