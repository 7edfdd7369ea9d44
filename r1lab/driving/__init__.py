"""Driving: GRPO for waypoint planning in highway-env (issue 14)."""
