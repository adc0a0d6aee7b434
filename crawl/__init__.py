"""Plain-Python crawling library: Reddit sources, URL rules, polite fetching, WARC, extraction and filters."""
