"""Tiny notebooks for the grading tests, built in code so every test reads what it checks."""
