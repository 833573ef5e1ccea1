"""Policies as data: who may do what (access), and later immutability, retention, admission."""
