"""Caller credentials: API keys (file-backed store), JWT bearer tokens, mTLS certificates."""
