"""`normlab check`: a learner's own batch norm, layer norm, spatial batch norm and group norm (CS231n
assignment 2's functions, or normlab.functional's signatures) checked against normlab's functional core,
with the known mistake named and the first wrong step of a staged backward found. See docs/check.md.

    from normlab.check import check_file
    report = check_file("cs231n/layers.py")
    print(report.to_text())       # or report.to_json(); report.exit_code
"""

from normlab.check.report import Report
from normlab.check.run import check_file

__all__ = ["Report", "check_file"]
