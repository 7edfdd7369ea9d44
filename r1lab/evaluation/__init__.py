"""Evaluation as R1 reports it: sampling and grading k completions per problem (``evaluate``),
pass@k / cons@k / summaries (``metrics``), and the reflection-word rate (``reflection``)."""
