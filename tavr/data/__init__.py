"""Data: video/audio IO, the TAVR-Synth renderer, ingest, manifest and QA."""
