"""Page bytes to documents: charset decoding, main-text extraction in a sandbox process, language and quality rules."""
