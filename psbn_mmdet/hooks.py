"""mmengine hooks for ``custom_hooks``: psBN recovery and collapse monitoring.

::

    custom_hooks = [dict(type='PostShiftHook', interval=50)]        # psBN
    custom_hooks = [dict(type='CollapseMonitorHook', interval=50,   # BN baseline
                         window=100)]

Both log, per stage (stem, layer1..layer4), through the runner's MessageHub so
the text log, the JSON log and every visualizer backend (TensorBoard...) see:
``psbn/dead_<stage>`` (pre-ReLU channels dead in the last window),
``psbn/collapsed_gamma_<stage>`` (|γ| < 1e-3) and ``psbn/recovered_<stage>``
(shifts so far).  The controller's counters are saved in checkpoints under the
``psbn`` key and restored on resume.

``import psbn_mmdet`` registers both in mmengine's ``HOOKS`` by name; this
module is imported when a config first builds one.
"""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from .controller import PostShiftController

CHECKPOINT_KEY = 'psbn'


class PostShiftHook(Hook):
    """Wraps :class:`PostShiftController`: detect, post-shift, log.

    Args:
        interval: log the per-stage scalars every ``interval`` iterations.
        window: detection window for every layer; None uses each psBN layer's
            ``window`` from ``norm_cfg``.
        optimizer_reset: see :class:`PostShiftController`.
        shift: False to monitor only.
    """

    # After the optimizer step (inside train_step), before LoggerHook.
    priority = 'NORMAL'

    def __init__(self, interval: int = 50, window: int | None = None,
                 optimizer_reset: str = 'none', shift: bool = True) -> None:
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(
                f'interval must be an integer >= 1, got {interval!r}')
        self.interval = interval
        self.window = window
        self.optimizer_reset = optimizer_reset
        self.shift = shift
        self.controller: PostShiftController | None = None
        self._resumed_state: dict | None = None

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        self.controller = PostShiftController(
            model,
            runner.optim_wrapper,
            shift=self.shift,
            window=self.window,
            optimizer_reset=self.optimizer_reset)
        if self._resumed_state is not None:
            self.controller.load_state_dict(self._resumed_state)
        self._publish(runner)

    def after_train(self, runner) -> None:
        self.controller.close()

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self.controller.step()
        if self.every_n_train_iters(runner, self.interval):
            self._publish(runner)

    def _publish(self, runner) -> None:
        hub = runner.message_hub
        controller = self.controller
        for kind, counts in (('dead', controller.dead_by_stage()),
                             ('collapsed_gamma',
                              controller.collapsed_gamma_by_stage()),
                             ('recovered', controller.recovered_by_stage())):
            for stage, count in counts.items():
                hub.update_scalar(f'train/psbn/{kind}_{stage}', count)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.controller is not None:
            checkpoint[CHECKPOINT_KEY] = self.controller.state_dict()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Resume loads the checkpoint before ``before_train`` builds the
        # controller: keep the state until then.
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is None or not runner._resume:
            # as mmengine's EMAHook: ``load_from`` alone starts counting anew
            return
        if self.controller is None:
            self._resumed_state = state
        else:
            self.controller.load_state_dict(state)


class CollapseMonitorHook(PostShiftHook):
    """The same scalars as :class:`PostShiftHook`, never shifting (BN runs)."""

    def __init__(self, interval: int = 50, window: int | None = 100) -> None:
        super().__init__(interval=interval, window=window, shift=False)
