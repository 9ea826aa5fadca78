"""Translation of SFT data into the target language: pipeline, backends, filters, language ID."""
