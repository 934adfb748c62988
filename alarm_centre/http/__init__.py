"""The HTTP layer: the REST API, its error answers and the API description."""
