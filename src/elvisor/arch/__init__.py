"""Architecture-specific parts of the VMM."""
