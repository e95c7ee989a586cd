"""Adapters on MongoDB through PyMongo's async client (``AsyncMongoClient``)."""
