"""Seeded synthetic bilingual clinical-pharmacology world: the embedded default data for AnesSuite."""
