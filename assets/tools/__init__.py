"""Dev tools that build and render the shipped assets (not imported at run time)."""
