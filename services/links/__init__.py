"""The process that keeps the links between the services' databases."""
