"""Taking results back to Hugging Face: PEFT export/import and fused models."""
