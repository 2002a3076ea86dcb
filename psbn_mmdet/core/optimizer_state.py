"""What a revival does to the optimizer's state of the entries it changed.

A revived entry (a re-initialized filter, γ, β, the zeroed outgoing
columns; a shifted γ and β) should be stepped as an ordinary entry of its
tensor, not as what collapse left it.  Optimizers keep per-entry state of
two kinds (torch's names):

* **first moments and other running values** (``momentum_buffer``,
  ``exp_avg``, RMSprop's ``grad_avg``, Adadelta's ``acc_delta``...): zeroed.
  A zero first moment is what a fresh entry starts from.
* **second moments** (:data:`SECOND_MOMENTS`: ``exp_avg_sq``,
  ``max_exp_avg_sq``, ``square_avg``, Adagrad's ``sum``, Adamax's
  ``exp_inf``): set to the median of the same tensor's *untouched* entries
  (zeroed only when every entry was touched).  Zeroing them is wrong late in
  a run: Adam's step count is per tensor, so its bias correction is then
  ≈ 1, and an entry whose moments are both 0 takes a first step of
  ``(1 − β1) / sqrt(1 − β2) ≈ 3.2`` × lr where a fresh entry's is 1 × lr
  (issue 39; measured 2.5-5.2 × lr over the first 10 steps at step 1000).
  With the tensor's typical second moment the entry's steps grow from
  0.1 × lr to the size of its neighbours' as its first moment fills.

Scalars (Adam's ``step``) and state of another shape are left alone.
Plain PyTorch.
"""
from __future__ import annotations

import torch

#: optimizer-state keys of second moments (scales of the update's divisor)
SECOND_MOMENTS = ('exp_avg_sq', 'max_exp_avg_sq', 'square_avg', 'sum',
                  'exp_inf')


def plain_optimizers(optimizer) -> list[torch.optim.Optimizer]:
    """Plain optimizers behind a torch optimizer or mmengine OptimWrapper(Dict)."""
    if optimizer is None:
        return []
    if isinstance(optimizer, torch.optim.Optimizer):
        return [optimizer]
    if hasattr(optimizer, 'optim_wrappers'):  # OptimWrapperDict
        return [w.optimizer for w in optimizer.optim_wrappers.values()]
    if hasattr(optimizer, 'optimizer'):  # OptimWrapper
        return [optimizer.optimizer]
    if isinstance(optimizer, (list, tuple)):
        return [o for item in optimizer for o in plain_optimizers(item)]
    raise TypeError(f'not an optimizer: {type(optimizer).__name__}')


def _kept_median(value: torch.Tensor, keep: torch.Tensor, dim: int):
    """Median of ``value``'s slices along ``dim`` where ``keep``; None when
    there are none."""
    index = keep.nonzero().flatten().to(value.device)
    if index.numel() == 0:
        return None
    kept = value.index_select(dim, index)
    kept = kept[torch.isfinite(kept)]
    return kept.median() if kept.numel() else None


@torch.no_grad()
def reset_optimizer_state(optimizers, touched, second: str = 'typical',
                          reference: torch.Tensor | None = None) -> None:
    """Reset the state of the touched slices (``(tensor, mask, dim)``: the
    entries ``mask`` selects along ``dim``) in every optimizer.

    Every per-entry value is zeroed, except second moments
    (:data:`SECOND_MOMENTS`) when ``second='typical'``: those become the
    median over the slices ``reference`` selects (default: the untouched
    ones, ``~mask``), or 0 where there is none.  ``second='zero'`` zeroes
    them too.
    """
    if second not in ('typical', 'zero'):
        raise ValueError(f"second must be 'typical' or 'zero', got "
                         f'{second!r}')
    for optimizer in optimizers:
        for param, mask, dim in touched:
            state = optimizer.state.get(param)
            if not state or not mask.any():
                continue
            index = mask.nonzero().flatten().to(param.device)
            keep = ~mask if reference is None else reference
            for key, value in state.items():
                if not (torch.is_tensor(value) and value.shape == param.shape):
                    continue
                fill = (_kept_median(value, keep.to(mask.device), dim)
                        if second == 'typical' and key in SECOND_MOMENTS
                        else None)
                if fill is None:
                    value.index_fill_(dim, index, 0)
                else:
                    value.index_fill_(dim, index, fill.item())
