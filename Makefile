# The two set-up commands of the README. Each creates .venv when missing and installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mxlaunch-installed
DEMO_DIR ?= runs/demo
DATA_DIR ?= data/digits

.PHONY: demo test venv system-packages bench clean

venv: $(STAMP)

# Debian packages the tests need, each installed when missing; only root can install them (elsewhere the
# tests that need them skip with the reason; under .ci/run, which requires the bed, they fail with it):
# the SSH test bed (sshd, ip), the GPU-environment test (a C compiler for its stub driver, readelf, ldd) and the
# install test (the system python3's own venv and pip: python3-venv).
system-packages:
	@missing=""; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v cc >/dev/null || missing="$$missing gcc"; \
	command -v readelf >/dev/null || missing="$$missing binutils"; \
	[ ! -x /usr/bin/python3 ] || /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing$$missing (test bed, GPU-environment and install tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# pip would compile the installed modules one after another: compileall -j 0 does it on every core (the set-up
# took 48 s, now 36 s, on 2 cores). All compiled now: the test hosts' login user cannot write __pycache__ here.
$(STAMP): pyproject.toml setup.py | system-packages
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q --no-compile -e '.[cpu,test]'
	$(PY) -m compileall -q -j 0 $(VENV)/lib >/dev/null || true
	@touch $@

# The main job on the embedded default: real handwritten digits, a 2-worker + 1-server dist_sync job on this machine.
demo: venv
	$(PY) -m mxlaunch.trainer data digits --out $(DATA_DIR)
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/launch train --local -n 2 -s 1 --run-dir $(DEMO_DIR) -- \
		trainer fit --network resnet --num-layers 8 \
		--data-train $(DATA_DIR)/digits_train.rec --data-val $(DATA_DIR)/digits_val.rec \
		--image-shape 3,28,28 --pad-size 0 --random-crop 1 --random-mirror 0 --rgb-mean 0,0,0 \
		--batch-size 16 --num-epochs 7 \
		--lr 0.1 --lr-factor 0.1 --lr-step-epochs 4,6 --seed 1 --model-prefix $(DEMO_DIR)/digits-resnet8

# three workers on two cores: many tests wait on processes, SSH or the box (two workers kept the cores ~60% busy;
# on this project's 2-core CI machine three ran the suite in 517 s, four in 542 s: the suite is CPU-bound then)
test: venv
	$(PY) -m pytest -n 3 --dist loadgroup

bench: venv
	$(PY) bench/trainer_throughput.py

clean:
	rm -rf $(VENV) runs data build *.egg-info
