"""The review artifacts of a report: sheets and plots (``viz``, ``review_plots``, ``ig_figures``),
``report.html`` (``report_html``), provenance, and the folder that is logged under ``xai/`` (``write``).
Figures are drawn from what the audit kept; nothing here runs the model.

May import: ``report``, ``config``, ``probe``, ``attribution.path_profiles`` (the data of the IG
figures). Never MLflow or the engine.
"""

from mlflow_xai.artifacts.write import (
    FORMULA_STARTS,
    feature_names,
    image_display,
    spreadsheet_safe,
    summary_dict,
    write_artifacts,
)

__all__ = [
    "FORMULA_STARTS",
    "feature_names",
    "image_display",
    "spreadsheet_safe",
    "summary_dict",
    "write_artifacts",
]
