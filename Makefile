# The two commands of the README.  Both set up .venv/ first (idempotent).
PY := .venv/bin/python
DEMO_CONFIG ?= configs/demo/faster_rcnn_r50_psbn_demo.py
DEMO_WORK_DIR ?= work_dirs/demo_faster_rcnn_r50_psbn

.PHONY: setup demo test data slurm
setup:
	@bash tools/setup_env.sh

data: setup
	@$(PY) tools/make_demo_data.py

# Finetune a psBN Faster R-CNN on the demo data, evaluate (CocoMetric), report collapse.
demo: data
	@bash tools/run_demo.sh $(DEMO_CONFIG) $(DEMO_WORK_DIR)

# Debian's Slurm and munge for tests/test_slurm.py (tools/slurm_local.sh): one
# apt-get of about 12 s on a fresh machine, nothing once installed.  Without
# root or apt-get the Slurm tests are skipped and name what is missing.
slurm:
	@bash tools/slurm_local.sh install || \
		echo "make: Slurm not installed: the Slurm tests will be skipped" >&2

test: setup slurm
	@$(PY) -m pytest -q tests
