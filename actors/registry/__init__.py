"""The registry actor: CARS services (processes) and environment templates."""
