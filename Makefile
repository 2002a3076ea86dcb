# The two commands of the README.  Both set up .venv/ first (idempotent).
PY := .venv/bin/python
DEMO_CONFIG ?= configs/demo/faster_rcnn_r50_psbn_demo.py
DEMO_WORK_DIR ?= work_dirs/demo_faster_rcnn_r50_psbn

.PHONY: setup demo test data
setup:
	@bash tools/setup_env.sh

data: setup
	@$(PY) tools/make_demo_data.py

# Finetune a psBN Faster R-CNN on the demo data, evaluate (CocoMetric), report collapse.
demo: data
	@bash tools/run_demo.sh $(DEMO_CONFIG) $(DEMO_WORK_DIR)

test: setup
	@$(PY) -m pytest -q tests
