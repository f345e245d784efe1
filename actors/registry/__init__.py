"""The registry actor: CARS services (processes) and, later, environment templates."""
