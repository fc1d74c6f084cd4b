"""End-to-end tests of liveupdates.integrations, each with the real framework under uvicorn."""
