"""The template's own resources and functions, run on one machine over moto server."""
