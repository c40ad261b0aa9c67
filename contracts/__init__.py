"""What crosses a process boundary: settings, messages, topology, database models."""
