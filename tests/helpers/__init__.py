"""Test helpers: image factories and HTTP requests built the way API Gateway delivers them.

Importable as `helpers` because tests/conftest.py puts tests/ on pytest's import path (rootdir conftest).
"""
