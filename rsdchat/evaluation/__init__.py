"""Benchmarks (`load_problems`, `DATASETS`), user question files and answer grading."""

from rsdchat.evaluation.data import (
    DATASETS,
    DataError,
    Dataset,
    Problem,
    load_jsonl_questions,
    load_problems,
)
from rsdchat.evaluation.grading import extract_answer, is_correct

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "Problem",
    "extract_answer",
    "is_correct",
    "load_jsonl_questions",
    "load_problems",
]
