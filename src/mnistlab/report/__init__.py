"""The run report and the comparison of runs: figures, Jinja2 templates, the tutorial parity.

- ``build_report(run_dir)`` draws every figure of a run and writes a self-contained
  ``report.html`` (``build.py`` the figures and files, ``page.py`` what each section shows).
- ``compare_runs(paths, out=...)`` writes ``compare.html`` and ``compare.png`` (``compare.py``).
- ``parity.py`` says how a run compares with the tutorial's published numbers.
- ``kit.py`` is the one template environment (autoescape on) both pages are rendered with;
  ``templates/`` holds the base layout, the shared macros and one template per report section,
  ``static/report.css`` the stylesheet both pages inline.
"""

from mnistlab.report.build import FIGURES, build_figures, build_report
from mnistlab.report.compare import METRIC_HEADERS, Comparison, compare_runs
from mnistlab.report.parity import TUTORIAL, parity_verdict, recipe_differences

__all__ = [
    "FIGURES",
    "METRIC_HEADERS",
    "TUTORIAL",
    "Comparison",
    "build_figures",
    "build_report",
    "compare_runs",
    "parity_verdict",
    "recipe_differences",
]
