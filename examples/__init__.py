"""Example services guarded by mlguard; a source checkout only, not shipped in the wheel."""
