"""The public face: upload, ingest, task DB, scheduler, status, download, web page."""
