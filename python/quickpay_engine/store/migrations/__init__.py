"""Schema migrations shipped as package data, one folder per database kind."""
