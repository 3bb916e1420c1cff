"""One-off scripts that derive the project's shipped data (run by hand, never at run time)."""
