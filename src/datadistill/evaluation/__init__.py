"""Evaluation: frozen protocols, fresh networks trained on a set, honest baselines."""

from datadistill.evaluation.evaluate import (
    EvalReport,
    Result,
    evaluate,
    random_subset,
    train_and_test,
)
from datadistill.evaluation.protocols import PROTOCOLS, Protocol, get_protocol
from datadistill.evaluation.train import accuracy, label_loss, train_network

__all__ = [
    "PROTOCOLS",
    "EvalReport",
    "Protocol",
    "Result",
    "accuracy",
    "evaluate",
    "get_protocol",
    "label_loss",
    "random_subset",
    "train_and_test",
    "train_network",
]
