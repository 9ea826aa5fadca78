"""Evaluation: model comparison, multiple choice, LLM judge, fidelity, scoring, sweeps."""
