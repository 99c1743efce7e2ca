"""Bin photos as a torch Dataset. A corrupt or truncated JPEG is skipped (with a warning that
names it), never fatal: ``__getitem__`` returns None and :func:`collate_bins` drops it."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from numpy.random import SeedSequence
from PIL import Image
from torch.utils.data import Dataset, DistributedSampler, default_collate

# Pillow raises these for a file that is not a whole, decodable image.
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


class BinImageDataset(Dataset):
    """``(image_id, count)`` pairs read from ``<images_dir>/<id>.jpg``, or ``(image_id, count,
    path)`` triples (folder and table sets) read from their path.

    Items are dicts ``{"image": tensor, "label": class index, "id": str, "index": int}``; the
    class index of a count is its position in ``counts``. With a ``seed``, the random transform
    of item i in epoch e is seeded by (seed, e, i): it does not depend on when or in which worker
    it runs; without one (evaluation) it draws from torch's global generator.
    """

    def __init__(
        self,
        items: Sequence[tuple[str, int] | tuple[str, int, Path]],
        images_dir: Path,
        transform: Callable[[Image.Image], torch.Tensor],
        counts: Sequence[int],
        seed: int | None = None,
    ) -> None:
        self.items = list(items)
        self.seed = seed
        self.epoch = 0
        self.images_dir = Path(images_dir)
        self.transform = transform
        self.class_of = {count: index for index, count in enumerate(counts)}

    def __len__(self) -> int:
        return len(self.items)

    def path(self, index: int) -> Path:
        item = self.items[index]
        return Path(item[2]) if len(item) > 2 else self.images_dir / f"{item[0]}.jpg"

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        image_id, count = self.items[index][:2]
        try:
            image = load_rgb(self.path(index))
        except UNREADABLE as err:
            warnings.warn(f"skipping unreadable image {self.path(index)}: {err}", stacklevel=2)
            return None
        return {
            "image": self._transform(image, index),
            "label": self.class_of[count],
            "id": image_id,
            "index": index,
        }

    def _transform(self, image: Image.Image, index: int) -> torch.Tensor:
        return seeded_transform(self.transform, image, self.seed, self.epoch, index)


def seeded_transform(
    transform: Callable[[Any], torch.Tensor], image: Any, seed: int | None, epoch: int, index: int
) -> torch.Tensor:
    """Apply ``transform`` with its randomness drawn from (seed, epoch, index) alone."""
    if seed is None:
        return transform(image)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(SeedSequence([seed, epoch, index]).generate_state(1)[0]))
        return transform(image)


class EpochSampler(DistributedSampler):
    """Shuffles by (seed, epoch) and hands the epoch to the dataset's seeded transforms.

    Lightning calls ``set_epoch`` before each epoch; a run resumed from ``last.ckpt`` thus
    replays exactly what the uninterrupted run saw. Also the distributed sampler under DDP.
    """

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.dataset.epoch = epoch


def collate_bins(batch: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack the readable items; ``skipped`` counts the unreadable ones in this batch; ``index``
    (the items' dataset positions, which seed their augmentation) stays a list: it is not moved
    to the device."""
    good = [item for item in batch if item is not None]
    skipped = len(batch) - len(good)
    if not good:
        return {
            "image": torch.empty(0, dtype=torch.uint8),
            "label": torch.empty(0, dtype=torch.long),
            "id": [],
            "index": [],
            "skipped": skipped,
        }
    index = [item.pop("index") for item in good]
    return {**default_collate(good), "index": index, "skipped": skipped}
