"""Reports of a run directory: ``run`` reads it, ``plots`` draws R1's curves, ``tables`` picks the
evaluations and samples, ``render`` writes HTML and Markdown."""
