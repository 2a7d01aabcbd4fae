"""Configuration: main.cf and master.cf parsers and the parameter registry."""
