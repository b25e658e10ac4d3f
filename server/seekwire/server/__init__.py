"""seekwire gateway."""
