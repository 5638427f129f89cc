"""Offline build stages for the recommender's artifacts (`python -m model_build --help`)."""
