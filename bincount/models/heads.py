"""The two heads over the counts, ``model.head``: ``softmax`` and ``ordinal``.

``softmax``: one linear layer, one score per count, cross-entropy; the counts are unordered
classes (predicting 5 for a 1 costs the same as predicting 2).

``ordinal``: CORN, from Shi, Cao and Raschka, "Deep Neural Networks for Rank-Consistent Ordinal
Regression Based On Conditional Probabilities" (2021, arXiv:2111.08851; Pattern Analysis and
Applications 2023). One linear layer gives K-1 conditional logits ``z_k``, with
``sigmoid(z_k) = P(y > k | y > k-1)`` over the class indices 0..K-1 of the ordered counts. The
unconditional ``P(y > k)`` is their cumulative product: non-increasing in k for any weights
(rank-consistent by construction). The class distribution follows:

    P(y = 0)   = 1 - c_0
    P(y = k)   = c_0 ... c_{k-1} (1 - c_k)        (0 < k < K-1)
    P(y = K-1) = c_0 ... c_{K-2}                  with c_k = sigmoid(z_k)

The head outputs ``log P(y = k)``: sums of log-sigmoids (``log(1 - c_k) = logsigmoid(-z_k)``).
No difference of probabilities appears (as it would in CORAL's or any cumulative-link head,
where ``P(y = k) = P(y > k-1) - P(y > k)``), so nothing needs clamping: every term is finite and
accurate for any logit. These class log-probabilities are the net's output SCORES, and
``softmax(scores) = P`` since the probabilities sum to 1; so ``softmax(scores / T)``, metrics,
calibration, reconciliation, export, ONNX, int8 and serving treat both heads alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bincount.errors import BincountError

HEADS = ("softmax", "ordinal")


def check_head(key: str, head: object) -> str:
    """``head`` when it is one of :data:`HEADS`; else a BincountError naming ``key``."""
    if head not in HEADS:
        raise BincountError(f"{key}: expected one of {', '.join(HEADS)}, got {head!r}")
    return str(head)


def log_sigmoid(z: torch.Tensor) -> torch.Tensor:
    """``log(sigmoid(z))`` written with ops that keep it exact in ONNX as well:
    ``min(z, 0) - log1p(exp(-|z|))`` (no overflow, no log of an underflowed zero)."""
    return torch.clamp(z, max=0.0) - torch.log1p(torch.exp(-z.abs()))


def corn_log_probs(conditional_logits: torch.Tensor) -> torch.Tensor:
    """Class log-probabilities (N, K) from CORN's K-1 conditional logits (N, K-1)."""
    passed = torch.cumsum(log_sigmoid(conditional_logits), dim=1)  # log P(y > k)
    stops = log_sigmoid(-conditional_logits)  # log P(y = k | y > k-1)
    # log P(y = k) = log P(y > k-1) + log P(y = k | y > k-1), with log P(y > -1) = 0 and
    # P(y = K-1 | y > K-2) = 1: pad a zero column on either side.
    return F.pad(passed, (1, 0)) + F.pad(stops, (0, 1))


def exceedance(conditional_logits: torch.Tensor) -> torch.Tensor:
    """``P(y > k)`` for k = 0..K-2: the cumulative product of the conditional probabilities."""
    return torch.cumprod(torch.sigmoid(conditional_logits), dim=1)


class CornHead(nn.Linear):
    """CORN's output layer: a linear layer to K-1 conditional logits whose forward returns the
    class log-probabilities (the net's scores). A ``nn.Linear`` subclass, so the state dict keeps
    ``fc.weight``/``fc.bias`` and everything that looks at ``net.fc`` (the frozen backbone, the
    monitoring embeddings hooked at its input) works for both heads."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        if num_classes < 2:
            raise BincountError(f"model.head=ordinal needs at least 2 counts, got {num_classes}")
        super().__init__(in_features, num_classes - 1)

    def conditional_logits(self, features: torch.Tensor) -> torch.Tensor:
        """``z_k`` with ``sigmoid(z_k) = P(y > k | y > k-1)``, shape (N, K-1)."""
        return super().forward(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return corn_log_probs(self.conditional_logits(features))


def corn_loss(conditional_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The CORN loss as the paper defines it (the reference for :func:`head_loss`): for each task
    k, the binary cross-entropy of ``z_k`` against ``y > k`` over the training subset ``y > k-1``
    (the examples for which the condition holds), summed over tasks and divided by the total
    size of the subsets."""
    total = conditional_logits.new_zeros(())
    examples = 0
    for k in range(conditional_logits.shape[1]):
        subset = labels > k - 1
        if not subset.any():
            continue
        target = (labels[subset] > k).float()
        total = total + F.binary_cross_entropy_with_logits(
            conditional_logits[subset, k], target, reduction="sum")
        examples += int(subset.sum())
    return total / max(examples, 1)


def corn_loss_from_log_probs(log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The CORN loss computed from the class log-probabilities the head outputs.

    Why it is the same loss: an example of class y takes part in tasks k = 0..min(y, K-2): for
    k < y with target 1 (term ``-logsigmoid(z_k)``), and, when y < K-1, in task y with target 0
    (term ``-logsigmoid(-z_y)``). Its terms add up to ``-log P(y)`` of the formulas above. So the
    paper's sum over tasks and subsets is the summed negative log-likelihood, and its divisor,
    the total size of the subsets, is ``sum_i (min(y_i, K-2) + 1)``. The head computes
    ``log P(y)`` from the same log-sigmoids, so loss and gradients equal the reference's (up to
    float rounding; tests/models/test_heads.py checks it) while the LightningModule needs only
    the net's output.
    """
    k = log_probs.shape[1]
    nll = -log_probs.gather(1, labels.long().unsqueeze(1)).sum()
    examples = (torch.clamp(labels, max=k - 2) + 1).sum().clamp(min=1)
    return nll / examples


def head_loss(head: str, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The training loss of ``head`` on the net's scores: cross-entropy (softmax) or CORN."""
    if head == "ordinal":
        return corn_loss_from_log_probs(scores, labels)
    return F.cross_entropy(scores, labels)
