"""End-to-end tests of the demo application in headless Chromium."""
