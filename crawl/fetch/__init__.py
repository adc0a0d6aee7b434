"""The HTTP fetcher: polite, bounded and guarded fetching of HTML pages, robots.txt, the address guard and WARC."""
