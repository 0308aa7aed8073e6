"""Scenarios, the simulation runner, what-if search, sweeps and calibration."""
