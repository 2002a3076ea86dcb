# The two commands of the README.  Both set up .venv/ first (idempotent).
PY := .venv/bin/python

.PHONY: setup demo test test-all test-fast data slurm
setup:
	@bash tools/setup_env.sh

data: setup
	@$(PY) tools/make_demo_data.py

# Pretrain a small Faster R-CNN on the demo data (once), finetune it with BN and
# with psBN, evaluate both (CocoMetric) and compare their collapse.
demo: setup
	@bash tools/run_demo.sh

# Debian's Slurm and munge for tests/test_slurm.py (tools/slurm_local.sh): one
# apt-get of about 12 s on a fresh machine, nothing once installed.  Without
# root or apt-get the Slurm tests are skipped and name what is missing.
slurm:
	@bash tools/slurm_local.sh install || \
		echo "make: Slurm not installed: the Slurm tests will be skipped" >&2

# Every product path (train, test, dist, Slurm, report, prune, export, the
# demo's pieces); the tests marked long (research studies' end-to-end cells,
# the ResNet-50 pruning at mmdet's scale) run in test-all.
test: setup slurm
	@$(PY) -m pytest -q -m "not long" tests

# What test leaves out: .ci/run runs it after test, so CI runs everything.
test-all: setup slurm
	@$(PY) -m pytest -q -m long tests

# The edit-test loop: every test not marked slow or long (no training, no
# processes started; about 2-3 min on 2 cores).
test-fast: setup
	@$(PY) -m pytest -q -m "not slow and not long" tests
