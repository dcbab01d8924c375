"""Handling what users hand the server: files in their folders, JSON, regular expressions, image URLs."""
