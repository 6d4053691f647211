"""The reader's review of a scan's findings (undoable edits, Lung-RADS) and the workspace that
keeps it. Plain Python below the GUI."""

from lungview.review.lungrads import lung_rads, worst
from lungview.review.model import Finding, Review, from_detection, sphere

__all__ = ["Finding", "Review", "from_detection", "lung_rads", "sphere", "worst"]
