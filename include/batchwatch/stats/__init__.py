"""Pure statistics over arrays: no SQL, no files, no network."""
