"""Collecting speculation and link statistics, apart from where they are reported."""
