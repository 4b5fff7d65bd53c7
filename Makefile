# Two commands for users and CI: `make demo` and `make test`.
# Both build what they need first (`make setup`, idempotent).
SHELL := /bin/bash
PY := .venv/bin/python
# Run the demo against an existing ComfyUI checkout: make demo COMFYUI=/path/to/ComfyUI
COMFYUI ?= $(CURDIR)/.host/ComfyUI
# Python that runs that ComfyUI (defaults to the project's environment).
COMFY_PYTHON ?= $(CURDIR)/$(PY)
# A ComfyUI models folder with the real Wan, UMT5 and VAE files: make demo MODELS=/path/to/models
MODELS ?=

.PHONY: setup test demo bench node-docs gpu-kit clean

setup:
	@bash scripts/setup.sh

# One pytest worker per ComfyUI host (each host is imported in its own process);
# tests that need no host are shared out between them.
test: setup
	$(PY) -m pytest -n 2

demo: setup
	$(PY) -m scripts.demo --comfyui "$(COMFYUI)" --python "$(COMFY_PYTHON)" --out out $(if $(MODELS),--models "$(MODELS)")

bench: setup
	$(PY) benchmarks/window_attention.py

# The node help pages (English, Chinese), their pictures and locales/zh/ (README: Help inside ComfyUI)
node-docs: setup
	$(PY) -m scripts.make_node_docs

# Wheels and a ComfyUI source tree for a GPU machine without ComfyUI's packages (README: GPU measurements)
gpu-kit: setup
	@bash scripts/gpu_kit.sh

clean:
	rm -rf .venv .venv-registry .host .cache out .gpu-kit
