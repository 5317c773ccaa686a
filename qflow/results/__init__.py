"""Results and data outside the DB: the result store, serializers and encryption."""
