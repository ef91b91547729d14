# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mlflow-xai-installed

.PHONY: demo test mutation clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,ray,text,lightning]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mlflow-xai demo --config configs/default.yaml

test: $(STAMP)
	$(PY) -m ruff check mlflow_xai tests examples $(wildcard benchmarks)
	$(PY) -m pytest

# Mutation testing (slow, not part of `make test`): mutmut per module of [tool.mutmut.modules] in
# pyproject.toml, with that module's tests; prints each module's score and its surviving mutants.
# `make mutation MODULES="gate quadrature"` runs some of them.
mutation: $(STAMP)
	$(PY) tests/mutation/run.py $(MODULES)

clean:
	rm -rf $(VENV) mlflow.db mlruns .pytest_cache
