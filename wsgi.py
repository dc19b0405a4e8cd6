"""Entry point for gunicorn (`gunicorn wsgi:app`) and the Flask CLI (`flask --app wsgi`)."""

import gc

from portal import create_app

app = create_app()
# What starting made (models, templates, translations: some 160,000 objects) lives as long as the
# process: kept out of the collector's full passes, each of which stopped every thread of a web
# worker for about 80 ms every few thousand requests. Done before gunicorn forks
# its workers (--preload), the collector also stops writing to the pages they share with it.
gc.freeze()
