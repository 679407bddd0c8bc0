"""Fakes for tests: small, real servers on 127.0.0.1 instead of mocks."""
