import urllib.request
from pathlib import Path

import pytest
import torch
from torchvision import models

from bincount.models.backbone import PretrainedWeightsUnavailable, build_resnet, weights_path
from bincount.models.metrics import CountMetrics
from bincount.models.module import CountModule


def test_pretrained_weights_load_from_the_torch_home_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = Path(weights_path("resnet18"))
    assert target.parent == tmp_path / "hub" / "checkpoints"
    target.parent.mkdir(parents=True)
    imagenet = models.resnet18(num_classes=1000)  # stands in for the published file
    torch.save(imagenet.state_dict(), target)

    net = build_resnet("resnet18", num_classes=5, pretrained=True)

    assert torch.equal(net.conv1.weight, imagenet.conv1.weight)
    assert torch.equal(net.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)
    assert net.fc.out_features == 5


def test_missing_weights_name_the_file_and_the_ways_out(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # No network: a proxy that refuses every connection makes the download fail at once.
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    # urlopen caches its opener (and the proxy) process-wide: keep this one out of later tests.
    monkeypatch.setattr(urllib.request, "_opener", None)
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        build_resnet("resnet50", num_classes=5, pretrained=True)
    message = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth") in message
    assert "model.pretrained=false" in message
    assert not list((tmp_path / "hub" / "checkpoints").glob("*.pth"))


@pytest.mark.parametrize("head", ["softmax", "ordinal"])
def test_frozen_backbone_trains_only_the_head(head: str) -> None:
    module = CountModule(arch="resnet18", head=head, pretrained=False, freeze_backbone=True,
                         counts=[1, 2, 3], image_size=32, channels_last=False, compile=False)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable == {"net.fc.weight", "net.fc.bias"}
    # Both heads give one probability per count; the ordinal one from K-1 outputs.
    assert module.net.fc.out_features == {"softmax": 3, "ordinal": 2}[head]
    assert module(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    assert module.spec().head == head


def test_count_metrics_on_known_predictions() -> None:
    metrics = CountMetrics([1, 2, 3, 4, 5], "test")
    labels = torch.tensor([0, 1, 2, 3, 4, 4])  # counts 1 2 3 4 5 5
    preds = torch.tensor([0, 1, 4, 2, 4, 0])  # counts 1 2 5 3 5 1
    metrics.update(torch.nn.functional.one_hot(preds, 5).float(), labels)
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert values["test_acc"] == pytest.approx(3 / 6)
    assert values["test_mae"] == pytest.approx((0 + 0 + 2 + 1 + 0 + 4) / 6)
    assert values["test_rmse"] == pytest.approx(((4 + 1 + 16) / 6) ** 0.5)
    assert values["test_within1_acc"] == pytest.approx(4 / 6)
    assert values["test_acc_count5"] == pytest.approx(0.5)
    assert values["test_acc_count3"] == 0.0
