"""Exercise checkers: run a learner's function against the library's, report the first miss."""

from __future__ import annotations

from lessonlib.teaching.checkers.engine import (
    NOT_WRITTEN,
    Case,
    CheckResult,
    Failure,
    check_against_reference,
    compare_kept_prefix,
    compare_logits,
)
from lessonlib.teaching.checkers.greedy import GREEDY_PROMPTS, check_my_greedy
from lessonlib.teaching.checkers.merge import MergeCase, check_my_merge, merge_cases
from lessonlib.teaching.checkers.min_p import check_my_min_p, min_p_cases
from lessonlib.teaching.checkers.speculative import (
    ACCEPT_DRAWS,
    ACCEPT_FALSE_ALARM,
    AcceptCase,
    accept_or_resample_cases,
    check_my_accept_or_resample,
)
from lessonlib.teaching.checkers.temperature import check_my_temperature, temperature_cases
from lessonlib.teaching.checkers.top_k import check_my_top_k, top_k_cases
from lessonlib.teaching.checkers.top_p import check_my_top_p, top_p_cases

__all__ = [
    "ACCEPT_DRAWS",
    "ACCEPT_FALSE_ALARM",
    "GREEDY_PROMPTS",
    "NOT_WRITTEN",
    "AcceptCase",
    "Case",
    "CheckResult",
    "Failure",
    "MergeCase",
    "accept_or_resample_cases",
    "check_against_reference",
    "check_my_accept_or_resample",
    "check_my_greedy",
    "check_my_merge",
    "check_my_min_p",
    "check_my_temperature",
    "check_my_top_k",
    "check_my_top_p",
    "compare_kept_prefix",
    "compare_logits",
    "merge_cases",
    "min_p_cases",
    "temperature_cases",
    "top_k_cases",
    "top_p_cases",
]
