"""Domain code of the recommender: events, profiles, catalog, scoring, and their storage."""
