"""The detection study: a detector finetuned from a checkpoint, cells x
norms x seeds, every run a ``tools/train.py`` process, records -> pages.

    python -m research.detection_study demo ARGS...      (docs/demo_finetune.md)
    python -m research.detection_study transfer ARGS...  (docs/transfer_study.md,
                                                         docs/detection_screening.md,
                                                         docs/revival_default.md)

Two families of cells share one harness (:mod:`.harness`: regimes'
cfg-options, checkpoint reuse, the process pool that records each run as it
finishes, a run's numbers read back from its work dir, the table cells):

* :mod:`.demo`: the demo's narrow ResNet-18 Faster / Mask R-CNN, pretrained
  on the demo shapes and finetuned on them in optimizer regimes, from the
  pretrained checkpoint or from a collapsed or healthy one (issues 13, 29);
* :mod:`.transfer`: the same detector pretrained on a source domain and
  finetuned on a target domain (issue 23's textured task and issue 38's
  tasks where capacity binds), at several widths, from the pretrained
  checkpoint or a collapsed or healthy start.
"""
