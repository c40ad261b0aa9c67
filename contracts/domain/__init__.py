"""Pure domain rules shared by every service (no I/O)."""
