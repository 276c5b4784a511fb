"""Rendering shared by the plugin's pages and the reports the core writes: plain strings, no I/O."""
