"""Evaluation scripts (LoCoMo retrieval, …); each writes a JSON report and prints a table."""
