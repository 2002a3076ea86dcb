"""Feeding a backbone the images of an mmdet config, as the detector sees them.

:class:`ActivationProbe` builds a config's test (or val) data set and its
data preprocessor once; :meth:`ActivationProbe.max_activations` runs a
backbone over the images and keeps the per-channel maxima of named BN layers
(:class:`~psbn_mmdet.core.criteria.ChannelMax`), each image's maximum taken
over its own pixels (:func:`extents`), so batch padding never counts.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from mmengine.config import Config
from torch import nn

from ..core.criteria import ChannelMax
from ..io.builders import mmdet_registries
from ..utils.config import load_config
from ..utils.errors import UserError, one_line

#: images per backbone pass
DEFAULT_BATCH_SIZE = 4


def extents(inputs: torch.Tensor, samples) -> list[tuple[int, int, int, int]]:
    """Per image ``(h, w, H, W)``: its own size (``img_shape``) inside the
    padded ``H x W`` batch, as :func:`~psbn_mmdet.core.criteria.channel_max`
    takes them."""
    H, W = inputs.shape[-2:]
    return [(*sample.metainfo.get('img_shape', (H, W))[:2], H, W)
            for sample in samples]


def build_dataset(cfg, data_config):
    """The test (or val) data set of the mmdet config ``cfg`` (read from
    the file ``data_config``, named in messages).

    Raises:
        UserError: no such data set in the config, it cannot be built, or it
            has no images.
    """
    datasets, _ = mmdet_registries()
    loader_cfg = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    if not loader_cfg or 'dataset' not in loader_cfg:
        raise UserError(f'{data_config}: no test_dataloader or '
                        'val_dataloader with a dataset in it')
    try:  # pycocotools' chatter would land in the tools' output on stdout
        with contextlib.redirect_stdout(io.StringIO()):
            dataset = datasets.build(loader_cfg['dataset'])
    except Exception as error:  # noqa: BLE001
        raise UserError(f'{data_config}: cannot build the data set '
                        f'({one_line(error, with_type=False)})') from None
    if len(dataset) == 0:
        raise UserError(f'{data_config}: the data set has no images')
    return dataset


def check_images(dataset, count: int, data_config) -> None:
    """Raise a one-line :class:`UserError` unless the first ``count`` images
    of ``dataset`` are files."""
    missing = [info['img_path'] for info in
               (dataset.get_data_info(i) for i in range(count))
               if not Path(info.get('img_path', '')).is_file()]
    if missing:
        raise UserError(f'{data_config}: cannot read the images: '
                        f'{len(missing)} of {count} missing (first: '
                        f'{missing[0]})')


class ActivationProbe:
    """The first ``num_images`` images (None: all) of a config's test (or
    val) set, ready to be run through backbones: the data set and the data
    preprocessor are built once.

    The data preprocessor (normalization, padding, batching) is the model
    config's ``model.data_preprocessor`` when it has one, else the data
    config's: normalization belongs to the weights.  ``data_config`` is a
    config file or a loaded ``Config`` (then ``source`` names it in
    messages).  ``available`` is the data set's size; ``num_images`` is at
    most that.
    """

    def __init__(self, model_config, data_config, num_images: int | None,
                 batch_size: int = DEFAULT_BATCH_SIZE,
                 source: str | None = None):
        self.model_config = model_config
        source = source or str(data_config)
        data_cfg = (data_config if isinstance(data_config, Config) else
                    load_config(data_config))
        model_cfg = (data_cfg if model_config == data_config else
                     load_config(model_config))
        dataset = build_dataset(data_cfg, source)
        self.available = len(dataset)
        self.num_images = min(num_images or self.available, self.available)
        check_images(dataset, self.num_images, source)
        pre_cfg = (model_cfg.get('model', {}).get('data_preprocessor')
                   or data_cfg.get('model', {}).get('data_preprocessor'))
        if pre_cfg is None:
            raise UserError(f'{model_config}: no model.data_preprocessor')
        _, models = mmdet_registries()
        self.preprocessor = models.build(pre_cfg)
        self.batch_size = batch_size
        self.images = torch.utils.data.Subset(dataset, range(self.num_images))

    def batches(self, batch_size: int | None = None
                ) -> Iterator[tuple[torch.Tensor, list]]:
        """Preprocessed batches (of ``batch_size`` images, default the
        probe's): ``(inputs, data_samples)``."""
        from mmengine.dataset import pseudo_collate
        loader = torch.utils.data.DataLoader(
            self.images, batch_size=batch_size or self.batch_size,
            collate_fn=pseudo_collate)
        for data in loader:
            with torch.inference_mode():
                data = self.preprocessor(data, False)
            yield data['inputs'], data['data_samples']

    def max_activations(self, backbone: nn.Module, names: list[str],
                        progress: Callable[[int], None] | None = None
                        ) -> dict[str, torch.Tensor]:
        """Per-channel maxima of the named modules' outputs over the images,
        on each image's own pixels.  ``progress(n)`` after each batch of
        ``n`` images."""
        with ChannelMax({n: backbone.get_submodule(n) for n in names}
                        ) as collector, torch.inference_mode():
            for inputs, samples in self.batches():
                collector.extents = extents(inputs, samples)
                backbone(inputs)
                if progress is not None:
                    progress(len(samples))
        return collector.maxima
