"""The publish receiver: Project Server says a project was published; pwasync syncs it."""
