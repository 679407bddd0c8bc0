"""Modules the LiteLLM proxy of test_litellm_proxy.py loads by name from its config.yaml
(imported in the proxy's process, from the venv of requirements-litellm-proxy.txt)."""
