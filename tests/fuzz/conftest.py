"""Fuzzing budgets: `ci` (default) keeps the suite fast; `HYPOTHESIS_PROFILE=long` runs 100,000
inputs per test, as docs/reliability.md records."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=100_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
