"""Reddit as the source of links: submissions from dump files or the API, URL identity and filters, link rules."""
