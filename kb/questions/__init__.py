"""Study questions made from the course, each checked against it, for the teacher to approve and export."""

from .types import BLANK, KINDS, REASONS, STATUSES, Question, RunReport, Section

__all__ = ["BLANK", "KINDS", "REASONS", "STATUSES", "Question", "RunReport", "Section"]
