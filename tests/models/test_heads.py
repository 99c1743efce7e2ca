"""The ordinal (CORN) head: a rank-consistent distribution over the counts, the paper's loss, and
a model that trains, exports, loads (torch and ONNX) and answers like the softmax one."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig

from bincount.config import build
from bincount.data.abid import DataError
from bincount.errors import BincountError
from bincount.models.backbone import build_net
from bincount.models.export import ModelSpec, export_model, load_model
from bincount.models.heads import (
    CornHead,
    corn_log_probs,
    corn_loss,
    corn_loss_from_log_probs,
    exceedance,
    head_loss,
)
from bincount.models.onnx import ONNX_FILE, ort_session, softmax
from bincount.train import train

# Conditional logits from ordinary to extreme: float32 sigmoid(-100) underflows, so a naive
# log(sigmoid(z)) would give -inf here.
LOGITS = torch.tensor([[0.0, 0.0, 0.0, 0.0],
                       [3.0, -1.0, 2.0, -4.0],
                       [100.0, 100.0, -100.0, 30.0],
                       [-100.0, 5.0, 5.0, 5.0],
                       [40.0, 40.0, 40.0, 40.0]])


def test_ordinal_probabilities_are_a_rank_consistent_distribution() -> None:
    log_probs = corn_log_probs(LOGITS)
    probs = log_probs.exp()
    assert torch.isfinite(log_probs).all()
    assert (probs >= 0).all()
    assert torch.allclose(probs.sum(dim=1), torch.ones(len(LOGITS)), atol=1e-6)
    # P(y > k) never rises with k, and it is what the class probabilities say it is.
    above = exceedance(LOGITS)
    assert (above[:, 1:] <= above[:, :-1]).all()
    tails = probs.flip(1).cumsum(1).flip(1)[:, 1:]  # P(y >= k+1)
    assert torch.allclose(tails, above, atol=1e-6)
    # The scores are log-probabilities: softmax (what every consumer applies) gives them back.
    assert torch.allclose(torch.softmax(log_probs, dim=1), probs, atol=1e-6)
    # All-zero logits: P(y > k | y > k-1) = 1/2 each: 1/2, 1/4, 1/8, 1/16, 1/16.
    assert probs[0].tolist() == pytest.approx([1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 16])


def test_corn_loss_matches_a_hand_computation() -> None:
    # Three counts, two tasks: "more than the 1st" (every image), "more than the 2nd" (images
    # of the 2nd and 3rd count only).
    z = torch.tensor([[0.5, -1.0], [2.0, 0.3], [-0.7, 1.5]], requires_grad=True)
    labels = torch.tensor([0, 1, 2])

    def bce(logit: float, target: int) -> float:
        p = 1 / (1 + math.exp(-logit))
        return -math.log(p if target else 1 - p)

    hand = (bce(0.5, 0) + bce(2.0, 1) + bce(-0.7, 1)  # task 0: all three images
            + bce(0.3, 0) + bce(1.5, 1)) / 5  # task 1: the 2nd and 3rd image
    reference = corn_loss(z, labels)
    assert float(reference.detach()) == pytest.approx(hand, rel=1e-6)

    # What training uses: the same loss from the head's class log-probabilities, same gradient.
    (ref_grad,) = torch.autograd.grad(reference, z)
    from_scores = corn_loss_from_log_probs(corn_log_probs(z), labels)
    (grad,) = torch.autograd.grad(from_scores, z)
    assert float(from_scores.detach()) == pytest.approx(hand, rel=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-6)

    # And on a batch with every class and the extreme logits above.
    labels5 = torch.tensor([0, 4, 2, 3, 1])
    assert float(head_loss("ordinal", corn_log_probs(LOGITS), labels5)) == pytest.approx(
        float(corn_loss(LOGITS, labels5)), rel=1e-5)


def test_model_head_is_validated(make_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(BincountError, match=r"model\.head: expected one of softmax, ordinal, "
                                            r"got 'cumulative'"):
        build(make_cfg("model.head=cumulative").model)
    with pytest.raises(BincountError, match=r"model\.head=ordinal: the counts must be in "
                                            r"increasing order"):
        build(make_cfg("model.head=ordinal", "data.counts=[3,1,2]").model)


def test_ordinal_model_exports_and_loads_with_the_same_probabilities(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_net("resnet18", num_classes=5, pretrained=False, head="ordinal").eval()
    with torch.no_grad():  # push some conditional probabilities to the edge of float32
        net.fc.bias.copy_(torch.tensor([30.0, -2.0, 60.0, -90.0]))
    spec = ModelSpec(arch="resnet18", image_size=32, mean=[0.5] * 3, std=[0.25] * 3,
                     counts=[1, 2, 3, 4, 5], head="ordinal")
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = torch.softmax(net(images), dim=1)

    model_dir = export_model(net, spec, tmp_path / "model", samples=images)

    record = json.loads((model_dir / "model.json").read_text())
    assert record["head"] == "ordinal" and record["onnx"]["passed"], record["onnx"]
    loaded, loaded_spec = load_model(model_dir)
    assert loaded_spec.head == "ordinal" and isinstance(loaded.fc, CornHead)
    with torch.inference_mode():
        probs = torch.softmax(loaded(images), dim=1)
    assert torch.allclose(probs, expected, atol=1e-6)
    assert torch.allclose(probs.sum(dim=1), torch.ones(6), atol=1e-5)
    (scores,) = ort_session(model_dir / ONNX_FILE).run(None, {"images": images.numpy()})
    assert np.isfinite(scores).all()
    assert np.abs(softmax(scores) - expected.double().numpy()).max() < 1e-5

    # A model.json naming an unknown head is refused, naming the file and the field.
    record["head"] = "coral"
    (model_dir / "model.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"model\.json: head must be one of softmax, ordinal"):
        load_model(model_dir)


def test_ordinal_head_trains_and_exports_through_train(
    make_cfg: Callable[..., DictConfig], one_thread: None,
) -> None:
    cfg = make_cfg("model.head=ordinal", "trainer.max_epochs=1")

    metrics = train(cfg)

    assert metrics["status"] == "ok" and math.isfinite(metrics["val_loss"])
    assert 0.0 <= metrics["test_acc"] <= 1.0
    net, spec = load_model(Path(cfg.paths.model_dir))
    assert spec.head == "ordinal" and net.fc.out_features == len(spec.counts) - 1
    with torch.inference_mode():
        probs = torch.softmax(net(torch.zeros(2, 3, 32, 32)), dim=1)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2), atol=1e-5)
    assert json.loads((Path(cfg.paths.model_dir) / "model.json").read_text())["onnx"]["passed"]
