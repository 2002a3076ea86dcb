"""What the channels psBN revived contribute at the end of training.

A probe of :func:`research.collapse_study.training.run`: when training ends,
it finds the channels psBN shifted at least once that are alive at the end
(eval mode over the training set, Mehta's criterion) and measures the test
accuracy (eval mode) with them zeroed, and, for comparison, with as many
random live channels of the same layers that were never shifted zeroed
(``draws`` random draws), and the median of each group's largest output
over the training set.  A channel is zeroed by a forward hook that sets
its BN output to 0, so its ReLU output is 0 everywhere; the hooks are
removed afterwards and the model is left as it was.
"""
from __future__ import annotations

import statistics

import torch

from research.collapse_study.training import (accuracy, dead_masks,
                                              pre_relu_maxima)


class _Zeroed:
    """Context: BN outputs of the masked channels set to zero."""

    def __init__(self, modules: dict, masks: dict[str, torch.Tensor]) -> None:
        self.handles = []
        for name, mask in masks.items():
            if mask.any():
                keep = (~mask).float().view(1, -1, 1, 1)
                self.handles.append(modules[name].register_forward_hook(
                    lambda module, args, output, keep=keep: output * keep))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


class Contribution:
    """The probe; ``data``: the run's data set (its train and test split)."""

    def __init__(self, model, optimizer, controller, data, draws: int = 10,
                 seed: int = 0) -> None:
        self.model, self.controller, self.data = model, controller, data
        self.draws, self.seed = draws, seed

    def after_step(self, result) -> bool:
        return False  # changes nothing during training

    def close(self) -> dict:
        model, controller, data = self.model, self.controller, self.data
        names = list(controller.pre_relu)
        modules = dict(model.named_modules())
        maxima = pre_relu_maxima(model, names, data.train_x)
        dead = dead_masks(maxima)
        revived, candidates = {}, {}
        for name in names:
            shifted = controller.shift_counts.get(name)
            if shifted is None:
                shifted = torch.zeros_like(dead[name], dtype=torch.long)
            revived[name] = (shifted > 0) & ~dead[name]
            candidates[name] = (shifted == 0) & ~dead[name]

        def acc(masks=None):
            with _Zeroed(modules, masks or {}):
                return accuracy(model, data.test_x, data.test_y)

        generator = torch.Generator().manual_seed(self.seed)
        random_acc, shortfall = [], 0
        for _ in range(self.draws):
            masks = {}
            for name in names:
                want = int(revived[name].sum())
                pool = candidates[name].nonzero().flatten()
                take = pool[torch.randperm(len(pool),
                                           generator=generator)[:want]]
                shortfall += want - len(take)
                masks[name] = torch.zeros_like(revived[name])
                masks[name][take] = True
            random_acc.append(acc(masks))
        full = acc()

        def median_max(masks):
            values = torch.cat([maxima[n][masks[n]] for n in names])
            return float(values.median()) if len(values) else None

        zero_revived = acc(revived)
        return dict(
            kind='contribution',
            revived_alive=sum(int(m.sum()) for m in revived.values()),
            shifted_ever=sum(int((c > 0).sum())
                             for c in controller.shift_counts.values()),
            live_never_shifted=sum(int(m.sum())
                                   for m in candidates.values()),
            channels=sum(m.numel() for m in dead.values()),
            test_acc=full,
            test_acc_revived_zeroed=zero_revived,
            test_acc_random_zeroed=random_acc,
            drop_revived=full - zero_revived,
            drop_random=full - statistics.fmean(random_acc),
            random_shortfall=shortfall // max(self.draws, 1),
            # the channels' largest BN output over the training set (eval
            # mode), median over the channels: how strongly they fire
            median_max_revived=median_max(revived),
            median_max_live_never_shifted=median_max(candidates))
