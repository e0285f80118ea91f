"""Eval sets, scorers, statistics and the client that queries a served model."""
