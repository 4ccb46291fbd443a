"""Tests for the providers (hosted and local)."""
