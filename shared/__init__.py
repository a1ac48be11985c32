"""The project's common library: everything two of the five services would otherwise copy."""
