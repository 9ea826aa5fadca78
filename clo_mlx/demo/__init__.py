"""The built-in offline demo: a bilingual corpus, a tiny English-centric model, CLO before/after."""

from pathlib import Path

DEMO_MODEL = Path(__file__).resolve().parents[1] / "assets" / "demo_model"
