"""What the container deployment relies on: the compose smoke (`compose_smoke.py`, run by
`make compose-smoke`, not by pytest) and the demo seed that compose runs on every `up`."""
